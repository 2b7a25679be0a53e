"""The embedded stack: a local MLflow server and Ray head beside the API (`rdvae serve`), and the demo."""
