"""Start-up checks of a run config: each bad value named, with the expected."""

import math
import os
from typing import Any, Callable

import ml_collections

import data_pipelines
from oasis_jax.runtime import cpu_workers


class ConfigError(ValueError):
  """Bad config values; the message has one clause per key."""


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


# key -> (test of the value, what is expected). Keys absent from a config
# (another data set's or an older config) are skipped.
_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    'seed': (lambda v: _is_int(v) and v >= 0, 'an integer >= 0'),
    'data.name': (lambda v: v in data_pipelines.DATASETS,
                  f'one of {data_pipelines.DATASETS}'),
    'data.source': (lambda v: v in data_pipelines.SOURCES,
                    f'one of {data_pipelines.SOURCES}'),
    'data.num_classes': (lambda v: _is_int(v) and v >= 2, 'an integer >= 2'),
    'data.image_size': (lambda v: _is_int(v) and v > 0, 'a positive integer'),
    'data.load_size': (lambda v: _is_int(v) and v > 0, 'a positive integer'),
    'data.aspect_ratio': (lambda v: _is_number(v) and v > 0,
                          'a positive number'),
    'data.dontcare_id': (lambda v: _is_int(v) and v >= -1,
                         'a class id, or -1 (none)'),
    'data.prepared': (lambda v: isinstance(v, str) and (not v or
                                                        os.path.isdir(v)),
                      "'' or an existing folder written by python -m "
                      'data_pipelines.prepare --out=DIR'),
    'data.num_workers': (lambda v: _is_int(v) and v >= cpu_workers.AUTO,
                         'an integer >= 0, or -1 (one per CPU core but '
                         'one)'),
    'data.synthetic_num_examples': (lambda v: _is_int(v) and v > 0,
                                    'a positive integer'),
    'generator.channels': (lambda v: _is_int(v) and v > 0,
                           'a positive integer'),
    'generator.num_res_blocks': (lambda v: _is_int(v) and v > 0,
                                 'a positive integer'),
    'optim.lr_g': (lambda v: _is_number(v) and v > 0, 'a positive number'),
    'optim.lr_d': (lambda v: _is_number(v) and v > 0, 'a positive number'),
    'ema.decay': (lambda v: _is_number(v) and 0 <= v <= 1,
                  'a number in [0, 1]'),
    'ema.bn_refresh_batches': (lambda v: _is_int(v) and v >= 0,
                               'an integer >= 0'),
    'train.num_steps': (lambda v: _is_int(v) and v > 0, 'a positive integer'),
    'train.batch_size': (lambda v: _is_int(v) and v > 0,
                         'a positive integer'),
    'train.log_every_steps': (lambda v: _is_int(v) and v > 0,
                              'a positive integer (steps)'),
    'train.sample_every_steps': (_is_int,
                                 'an integer (steps; <= 0: at the end only)'),
    'train.checkpoint_every_steps': (lambda v: _is_int(v) and v > 0,
                                     'a positive integer (steps)'),
    'train.keep_checkpoints': (lambda v: v is None or (_is_int(v) and v > 0),
                               'a positive integer (or None: keep all)'),
    'train.num_sample_images': (lambda v: _is_int(v) and v > 0,
                                'a positive integer'),
    'eval.fid_every_steps': (_is_int,
                             'an integer (steps; <= 0: no FID)'),
    'eval.num_fid_images': (lambda v: _is_int(v) and (v > 0 or v == -1),
                            'a positive integer or -1 (the whole split)'),
    'eval.batch_size': (lambda v: _is_int(v) and v > 0, 'a positive integer'),
    'eval.best_mode': (lambda v: v in ('min', 'max'), "'min' or 'max'"),
    'eval.segmenter': (
        lambda v: v in ('', 'drn_d_105', 'upernet101', 'deeplabv2_msc'),
        "'' (none), 'drn_d_105', 'upernet101' or 'deeplabv2_msc'"),
    'eval.segmenter_dtype': (lambda v: v in ('float32', 'bfloat16'),
                             "'float32' or 'bfloat16'"),
}


def _lookup(config: ml_collections.ConfigDict, key: str):
  """(found, value) of the dotted `key`."""
  node = config
  for part in key.split('.'):
    if part not in node:
      return False, None
    node = node[part]
  return True, node


def find_errors(config: ml_collections.ConfigDict) -> list[str]:
  """One message per bad value: "config.train.num_steps=-5: expected ..."."""
  errors = []
  for key, (is_valid, expected) in _CHECKS.items():
    found, value = _lookup(config, key)
    if found and not is_valid(value):
      errors.append(f'config.{key}={value!r}: expected {expected}')
  return errors


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming every bad value (on one line, '; ' apart).

  Args:
    config: the resolved run configuration.

  Raises:
    ConfigError: e.g. "config.train.num_steps=-5: expected a positive
      integer".
  """
  errors = find_errors(config)
  if errors:
    raise ConfigError('; '.join(errors) + '.')
