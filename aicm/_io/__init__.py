"""Layer 2: the I/O edges — the service's HTTP API and the SQLite queue."""
