"""Layer 4: the async API classes, where all behaviour lives."""
