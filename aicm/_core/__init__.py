"""Layer 1: pure code with no I/O — settings, records, validation, extraction, policy."""
