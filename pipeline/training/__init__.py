"""The training loop every method shares: batches, precision, checkpoints and resuming, validation."""
