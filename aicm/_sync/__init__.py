"""Layer 5: the sync facades over the async classes, and the shared portal they run on."""
