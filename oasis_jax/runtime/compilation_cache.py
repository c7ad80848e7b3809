"""JAX's persistent compilation cache, on by default for the entry points.

A restarted (e.g. preempted) job reads its compiled programs back instead of
compiling them again. Where the cache lives, first match wins:

1. `JAX_COMPILATION_CACHE_DIR` in the environment, as JAX itself reads it
   (set but empty: no cache);
2. the setting passed to `enable` (the training config's
   `train.compilation_cache_dir`): '' for no cache, a path, or 'auto';
3. 'auto': `$XDG_CACHE_HOME/oasis_jax/jax_compilation_cache`, by default
   `~/.cache/oasis_jax/jax_compilation_cache`.

Entries are keyed by the program, the compiler options, the devices and the
jax/jaxlib versions, so one folder serves every run and every machine kind.
"""

import os
from typing import Mapping, Optional

from absl import logging
import jax

ENV_VAR = 'JAX_COMPILATION_CACHE_DIR'
AUTO = 'auto'


def default_dir(environ: Optional[Mapping[str, str]] = None) -> str:
  """$XDG_CACHE_HOME (or ~/.cache) / oasis_jax / jax_compilation_cache."""
  environ = os.environ if environ is None else environ
  base = environ.get('XDG_CACHE_HOME') or os.path.join(
      os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'oasis_jax', 'jax_compilation_cache')


def resolve(setting: str = AUTO,
            environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
  """The cache folder for `setting`, or None for no cache.

  Args:
    setting: '' (off), 'auto' (the default folder) or a folder path ('~'
      expanded).
    environ: the environment (default: os.environ); its
      JAX_COMPILATION_CACHE_DIR, when present, wins over `setting`.

  Returns:
    The absolute folder path, or None when the cache is off.
  """
  environ = os.environ if environ is None else environ
  if ENV_VAR in environ:
    value = environ[ENV_VAR]
  elif setting == AUTO:
    value = default_dir(environ)
  else:
    value = setting
  return os.path.abspath(os.path.expanduser(value)) if value else None


def enable(setting: str = AUTO) -> Optional[str]:
  """Points JAX's persistent cache at resolve(setting); call before compiling.

  Programs that compile in under a second are not stored (JAX's default
  threshold), so the cache holds the training step, not every small helper.

  Args:
    setting: see `resolve`.

  Returns:
    The folder in use, or None when the cache is off.
  """
  path = resolve(setting)
  if os.environ.get(ENV_VAR) is not None:
    # JAX read the variable at import; '' leaves the cache off.
    logging.info('Compilation cache: %s (from %s).', path or 'off', ENV_VAR)
    return path
  jax.config.update('jax_compilation_cache_dir', path)
  logging.info('Compilation cache: %s.', path or 'off')
  return path
