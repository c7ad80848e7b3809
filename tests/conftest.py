"""Test set-up: 8 fake CPU devices, a persistent compilation cache, flags.

Compilation dominates the tests' time on a CPU, so compiled programs are
cached on disk outside the repository (OASIS_JAX_TEST_CACHE, default
~/.cache/oasis_jax_test_jit) and shared by the test processes and the
subprocesses they start (through the JAX_* environment variables).
"""

import os

_DEVICES_FLAG = '--xla_force_host_platform_device_count'
if _DEVICES_FLAG not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             f' {_DEVICES_FLAG}=8').strip()
# Compilation, not execution, dominates the tests: skip LLVM's optimizations
# (numerics are unchanged; about a quarter less compile time).
_OPT_FLAG = '--xla_backend_optimization_level'
if _OPT_FLAG not in os.environ['XLA_FLAGS']:
  os.environ['XLA_FLAGS'] += f' {_OPT_FLAG}=0'
os.environ.setdefault('OASIS_JAX_TEST_CACHE', os.path.join(
    os.path.expanduser('~'), '.cache', 'oasis_jax_test_jit'))
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.environ['OASIS_JAX_TEST_CACHE'])
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
import jax

jax.config.update('jax_compilation_cache_dir',
                  os.environ['JAX_COMPILATION_CACHE_DIR'])
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
# Grain reads absl flags; pytest does not parse them.
flags.FLAGS.mark_as_parsed()
