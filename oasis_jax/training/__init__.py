"""Training: the train state, losses, the pure step, EMA, input batches, checkpoints and the loop."""
