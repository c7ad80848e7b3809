"""The process around the model: mesh and sharding, batching, compilation cache, host memory, expected failures, logging."""
