"""The process around the model: mesh, batching, caches, failures, logs."""
