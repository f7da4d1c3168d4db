"""Layer 3: the delivery engine — an actor that batches, sends, retries, acks and reports."""
