"""Thin Ray Serve deployments and the app builders named in ``serve_config.yaml``."""
