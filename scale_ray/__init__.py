"""SCALE: a Ray-native AI accountant backend.

The package is importable and testable without a Ray cluster; nothing here starts Ray or touches
disk at import time.
"""

__version__ = "0.1.0"
