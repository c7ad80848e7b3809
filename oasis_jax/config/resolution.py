"""Resolves a run's config once: every 'auto' choice becomes a concrete value.

The platform decides which formulation of the same numbers runs (see
`oasis_jax/kernels/`): on a CPU the fast paths measured there, elsewhere the
reference formulations (XLA's convolution, the dense one-hot label conv)
unless a measurement on that platform shows better. This module is the only
one that asks JAX for the platform; what it decides is written into the
config, which the entry points print and save as `WORKDIR/config.json`.
"""

from typing import Any

import jax
import jax.numpy as jnp

# An ml_collections.ConfigDict. Not imported: the model (which resolves
# 'auto' when it meets one) stays importable where only jax, flax, optax and
# orbax are installed (managed GPU images; benchmarks/accelerator.py).
ConfigDict = Any

# config.perf choices; 'auto' is resolved by `resolve`.
CONV_IMPLS = ('xla', 'cpu')
LABEL_CONVS = ('dense', 'gather', 'gather_matmul')
CPU_SCHEDULERS = ('memory', 'concurrency', 'default')
INIT_COMPILES = ('optimized', 'unoptimized')
COMPUTE_DTYPES = ('float32', 'bfloat16', 'float64')
_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16,
           'float64': jnp.float64}

# Per platform: the value of each 'auto' choice of config.perf.
_AUTO = {
    'cpu': {'conv_impl': 'cpu', 'label_conv': 'gather',
            'cpu_scheduler': 'memory', 'init_compile': 'unoptimized'},
    # GPU and TPU: the reference (on a GPU the dense label conv measured
    # faster than the gather; see BENCHMARKS.md).
    'other': {'conv_impl': 'xla', 'label_conv': 'dense',
              'cpu_scheduler': 'default', 'init_compile': 'optimized'},
}
_CHOICES = {'conv_impl': CONV_IMPLS, 'label_conv': LABEL_CONVS,
            'cpu_scheduler': CPU_SCHEDULERS, 'init_compile': INIT_COMPILES,
            'compute_dtype': COMPUTE_DTYPES}


def platform() -> str:
  """'cpu', 'gpu' or 'tpu': the platform of JAX's default backend."""
  return jax.default_backend()


def resolve(config: ConfigDict) -> ConfigDict:
  """A copy of config with every 'auto' of config.perf made concrete.

  Idempotent: a resolved config resolves to itself. The copy is locked when
  config is. On GPU/TPU the CPU scheduler is 'default' (XLA:CPU's option
  does not apply there).

  Raises:
    ValueError: a config.perf value outside its choices, or float64 compute
      without `jax_enable_x64`; the message names the key and the choices.
  """
  defaults = _AUTO['cpu' if platform() == 'cpu' else 'other']
  resolved = type(config)(config.to_dict())
  perf = resolved.perf
  for key, choices in _CHOICES.items():
    value = perf[key]
    if value == 'auto' and key in defaults:
      value = defaults[key]
    if value not in choices:
      raise ValueError(f'config.perf.{key} must be one of '
                       f"{choices + (('auto',) if key in defaults else ())}"
                       f', got {value!r}.')
    perf[key] = value
  if platform() != 'cpu':
    perf.cpu_scheduler = 'default'
  if perf.compute_dtype == 'float64' and not jax.config.jax_enable_x64:
    raise ValueError("config.perf.compute_dtype='float64' needs 64-bit JAX: "
                     'set JAX_ENABLE_X64=1 (or jax_enable_x64).')
  if config.is_locked:
    resolved.lock()
  return resolved


def compute_dtype(config: ConfigDict):
  """The activation dtype config.perf.compute_dtype names.

  Raises:
    ValueError: a name outside COMPUTE_DTYPES (named with the choices).
  """
  name = config.perf.compute_dtype
  if name not in _DTYPES:
    raise ValueError(f'config.perf.compute_dtype must be one of '
                     f'{COMPUTE_DTYPES}, got {name!r}.')
  return _DTYPES[name]
