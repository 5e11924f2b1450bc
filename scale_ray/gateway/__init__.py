"""The HTTP API (Starlette), independent of how it is served (Ray Serve in production)."""
