"""Hyperbolic Category Discovery (HypCD, arXiv 2504.06120) for transaction descriptions."""
