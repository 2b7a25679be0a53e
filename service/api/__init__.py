"""The HTTP API: the app factory, routes, request schemas and errors, auth and ownership, metrics."""
