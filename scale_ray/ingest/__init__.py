"""Statement parsers: CSV layouts, OFX and ReBIT DEPOSIT FI data, into :mod:`records`."""
