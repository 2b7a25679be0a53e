"""The durable queue: the database and its migrations, the sweeps table, admission, and the runner of drivers."""
