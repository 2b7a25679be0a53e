"""Cron-scheduled sweeps: the schedules table, fire-time arithmetic and the loop that fires them."""
