"""Benchmarks of SCALE's hot paths; each module is a script (see benchmarks/README.md)."""
