"""A saved `config.json` read back merged onto the defaults of the schema.

A training workdir and an inference checkpoint keep the config they were
made with in `config.json`. Reading it starts from the defaults
(configs/default.py, plus the `config.data` keys of the named data set) and
puts each saved value over its default, so a file written before a key
existed still reads as a full config: the missing key takes its default,
which is what the code did before the key was added. Every value is checked
against the type of its default; a file that is not JSON or holds a value of
the wrong type is a `ConfigFileError` naming the file, the key and the value.
Keys the defaults do not hold (one an older version had, or one of a newer
version) are kept as saved.
"""

import json
import os
from typing import Any, Mapping

import ml_collections

import data_pipelines
from configs import default as default_lib

CONFIG_FILE = 'config.json'  # In a training workdir and an export folder.

# Keys whose saved value may be null although their default is not:
# train.keep_checkpoints=None keeps every checkpoint (validation.py).
NULLABLE = frozenset({'train.keep_checkpoints'})


class ConfigFileError(ValueError):
  """A config.json that is not JSON, or holds a value of the wrong type."""


def defaults(data_name: str) -> ml_collections.ConfigDict:
  """The defaults a saved config of data set `data_name` is merged onto.

  configs/default.py's config plus the `config.data` keys that only the
  data set has (e.g. LVIS's `paint_order`:
  `data_pipelines.lvis.dataset.DEFAULTS`).
  """
  config = default_lib.get_config()
  module = data_pipelines.FOLDER_DATASETS.get(data_name)
  config.data.update(getattr(module, 'DEFAULTS', {}))
  return config


_KINDS = ((bool, 'a boolean'), (int, 'an integer'), (float, 'a number'),
          (str, 'a string'), (tuple, 'a list'))


def _type_error(key: str, value: Any, default: Any) -> str:
  kind = next((k for t, k in _KINDS if isinstance(default, t)),
              type(default).__name__)
  return f'config.{key}={value!r}: expected {kind}, like {default!r}'


def _fits(value: Any, default: Any) -> bool:
  """Whether a saved `value` has the type of its `default`."""
  if isinstance(default, bool) or isinstance(value, bool):
    return isinstance(value, bool) and isinstance(default, bool)
  if isinstance(default, float):
    return isinstance(value, (int, float))
  if isinstance(default, tuple):
    return isinstance(value, (list, tuple)) and (
        not default or all(_fits(v, default[0]) for v in value))
  return isinstance(value, type(default))


def _merged_value(key: str, value: Any, default: Any) -> Any:
  """`value` as the type of `default`; ValueError naming the key if not."""
  if default is None or (value is None and key in NULLABLE):
    return value
  if not _fits(value, default):
    raise ValueError(_type_error(key, value, default))
  if isinstance(default, float):
    return float(value)
  return tuple(value) if isinstance(default, tuple) else value


def _merge(saved: Mapping[str, Any], base: ml_collections.ConfigDict,
          prefix: str = '') -> ml_collections.ConfigDict:
  """Puts the values of `saved` (nested dicts) over `base`, in place.

  Args:
    saved: a config as read from JSON.
    base: the defaults; changed in place and returned.
    prefix: the dotted key of `base` (for messages).

  Returns:
    `base`.

  Raises:
    ValueError: a value whose type differs from its default's (names it).
  """
  with base.unlocked():
    for key, value in saved.items():
      name = f'{prefix}{key}'
      if key not in base:
        base[key] = value  # Not in the schema: kept as saved.
      elif isinstance(base[key], ml_collections.ConfigDict):
        if not isinstance(value, Mapping):
          raise ValueError(f'config.{name}={value!r}: expected a section')
        _merge(value, base[key], f'{name}.')
      else:
        base[key] = _merged_value(name, value, base[key])
  return base


def _damaged(path: str, error: Exception) -> ConfigFileError:
  return ConfigFileError(f'{path} is not a readable config: {error}.')


def from_json(text: str, path: str = CONFIG_FILE
              ) -> ml_collections.ConfigDict:
  """A saved config (JSON text) merged onto its defaults.

  Args:
    text: the contents of a config.json.
    path: the file, for messages.

  Raises:
    ConfigFileError: one line naming `path` and what is wrong.
  """
  try:
    saved = json.loads(text)
    if not isinstance(saved, dict):
      raise ValueError(f'a JSON object is expected, not a '
                       f'{type(saved).__name__}')
    data = saved.get('data')  # Optional: an old file may lack the section.
    name = data.get('name', '') if isinstance(data, dict) else ''
    return _merge(saved, defaults(name if isinstance(name, str) else ''))
  except ValueError as e:
    raise _damaged(path, e) from e


def read(folder: str) -> ml_collections.ConfigDict:
  """The config saved in `folder`/config.json, merged onto the defaults.

  Args:
    folder: a training workdir or an inference checkpoint.

  Raises:
    FileNotFoundError: no config.json there (the message names the file).
    ConfigFileError: a damaged config.json (one line naming it).
  """
  path = os.path.join(os.fspath(folder), CONFIG_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f'{path} is missing: {folder} is not a training workdir of '
        '`python -m oasis_jax.main` (or pass the config explicitly).')
  try:
    with open(path, encoding='utf-8') as f:
      text = f.read()
  except UnicodeDecodeError as e:
    raise _damaged(path, e) from e
  return from_json(text, path)
