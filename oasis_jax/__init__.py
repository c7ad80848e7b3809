"""oasis-jax: OASIS semantic image synthesis in JAX/Flax."""
