"""Faster formulations of the OASIS layers' numbers, injected into models/.

Each module computes what a reference function of `oasis_jax/models/` (or,
for `n_plus_one`, of `oasis_jax/training/losses.py`) computes, up to float
rounding, and is tested against it
(tests/kernels_<module>_test.py). Which formulation runs is decided once,
when the config is resolved (oasis_jax/config/resolution.py).
"""
