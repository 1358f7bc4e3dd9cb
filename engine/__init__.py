"""Native media engine of sftd (C through cffi, API mode)."""
