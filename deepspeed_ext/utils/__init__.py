"""Tools that work on saved checkpoints."""
