"""Training: state, losses, the pure step, EMA, input, checkpoints, loop."""
