"""service: the FastAPI front door — durable sweeps, runner, scheduler, auth."""
