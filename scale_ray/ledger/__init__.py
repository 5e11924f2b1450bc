"""The ledger: Delta Lake tables ``transactions`` and ``accounts`` (DESIGN §2)."""
