"""The `rdvae` command line: its commands, its HTTP client of the API and its terminal views."""

from service.cli.commands import app, main

__all__ = ["app", "main"]
