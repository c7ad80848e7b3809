"""Whether a config may resume a workdir: model keys fixed, safe keys free.

A workdir's `config.json` is the config its checkpoints were trained with.
Before a run writes anything into a workdir, `check_workdir` compares the
resolved config with it: a change of a MODEL key (one that changes a
parameter's shape or meaning, or what the saved state means) stops the run
naming the keys and both values; a change of a SAFE key (steps, intervals,
learning rates, workers, evaluation settings) is allowed and logged.
`write_workdir_config` replaces `config.json` once the run has started with
the new config, keeping the one before as `config.previous.json`.
"""

import json
from typing import Any, Mapping

from absl import logging
from etils import epath
import ml_collections

from oasis_jax.config import workdir as workdir_config

PREVIOUS_CONFIG_FILE = 'config.previous.json'

MODEL = 'model'  # Fixed for the life of a workdir.
SAFE = 'safe'  # May change between the runs of a workdir.

# The classification of every config key, by dotted key or section prefix
# (the longest match wins). A key matching nothing is MODEL: an unknown key
# may change the state (a new network option, a new loss with parameters),
# and a wrongly refused change costs a new workdir while a wrongly allowed
# one costs a run. When you add a config key, add it here: SAFE only if the
# saved train state and data position keep their meaning under any value.
KEY_KINDS: dict[str, str] = {
    'seed': MODEL,  # Initialization, data order and noise of the run.
    # Data: what the classes and images are.
    'data.name': MODEL,
    'data.num_classes': MODEL,
    'data.dontcare_id': MODEL,
    'data.image_size': MODEL,
    'data.aspect_ratio': MODEL,
    'data.synthetic_num_examples': MODEL,  # Which examples positions mean.
    'data.synthetic_seed': MODEL,
    # Data: where the files are and how they are read or augmented.
    'data.root': SAFE,
    'data.source': SAFE,
    'data.tfds_data_dir': SAFE,
    'data.prepared': SAFE,  # The same batches as the folder route.
    'data.num_workers': SAFE,
    'data.palette': SAFE,  # Colours of the sample grids only.
    'data.load_size': SAFE,
    'data.random_crop': SAFE,
    'data.random_flip': SAFE,
    # The networks: every key (widths, depths, norms, kinds).
    'generator': MODEL,
    'discriminator': MODEL,
    # The objective: weights and switches of parameter-free terms. A loss
    # with parameters of its own (in the state) would be MODEL.
    'loss.use_class_balancing': SAFE,
    'loss.use_labelmix': SAFE,
    'loss.lambda_labelmix': SAFE,
    'loss.lambda_feat': SAFE,
    # The VGG-19 of the perceptual loss is frozen and not in the state.
    'loss.use_vgg': SAFE,
    'loss.lambda_vgg': SAFE,
    'loss.vgg_weights': SAFE,
    'loss.verify_vgg_weights': SAFE,
    'optim.lr_g': SAFE,
    'optim.lr_d': SAFE,
    'optim.b1': SAFE,
    'optim.b2': SAFE,
    'optim.eps': SAFE,
    'ema.use_ema': MODEL,  # Whether the state has an EMA generator.
    'ema.decay': SAFE,
    'ema.bn_refresh_batches': SAFE,
    # The saved data position counts batches of this size.
    'train.batch_size': MODEL,
    'train.num_steps': SAFE,
    'train.log_every_steps': SAFE,
    'train.sample_every_steps': SAFE,
    'train.checkpoint_every_steps': SAFE,
    'train.keep_checkpoints': SAFE,
    'train.num_sample_images': SAFE,
    'train.compilation_cache_dir': SAFE,
    'eval': SAFE,  # Evaluation settings: read, never trained on.
    'perf': SAFE,  # Formulations of the same numbers, dtypes, schedulers.
}


class ConfigMismatchError(ValueError):
  """The config changes model keys of a workdir's config.json."""


def kind_of(key: str) -> str:
  """MODEL or SAFE for a dotted key (longest matching entry of KEY_KINDS)."""
  parts = key.split('.')
  for n in range(len(parts), 0, -1):
    kind = KEY_KINDS.get('.'.join(parts[:n]))
    if kind is not None:
      return kind
  return MODEL


_ABSENT = '<absent>'


def _flatten(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, Mapping):
      flat.update(_flatten(value, f'{name}.'))
    else:
      flat[name] = value
  return flat


def _as_json_tree(config) -> dict[str, Any]:
  """A config (ConfigDict or dict) as it reads back from config.json."""
  if isinstance(config, ml_collections.ConfigDict):
    return json.loads(config.to_json_best_effort())
  return json.loads(json.dumps(config))


def compare(old, new) -> tuple[dict[str, tuple[Any, Any]],
                               dict[str, tuple[Any, Any]]]:
  """The changed keys of two configs, split by kind.

  Args:
    old: the workdir's config (a dict read from config.json, or a
      ConfigDict).
    new: the resolved config of this run.

  Returns:
    (model changes, safe changes): dotted key -> (old value, new value);
    a key only one config has is '<absent>' in the other.
  """
  old_flat = _flatten(_as_json_tree(old))
  new_flat = _flatten(_as_json_tree(new))
  model, safe = {}, {}
  for key in sorted(set(old_flat) | set(new_flat)):
    before, after = old_flat.get(key, _ABSENT), new_flat.get(key, _ABSENT)
    if before != after:
      (model if kind_of(key) == MODEL else safe)[key] = (before, after)
  return model, safe


def _describe(changes: Mapping[str, tuple[Any, Any]]) -> str:
  return ', '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in changes.items())


def check_workdir(config, workdir) -> None:
  """Stops on model changes against `workdir/config.json`; logs safe ones.

  Reads only: nothing is written. A workdir without config.json (a new run)
  passes. The saved config is merged onto the defaults first, so a key that
  an older run's file lacks compares as its default.

  Args:
    config: the resolved config of this run.
    workdir: the run's folder.

  Raises:
    ConfigMismatchError: names each changed model key, both values and the
      file.
  """
  path = epath.Path(workdir) / workdir_config.CONFIG_FILE
  if not path.is_file():
    return
  try:
    old = workdir_config.read(workdir)
  except (OSError, ValueError) as e:
    raise ConfigMismatchError(
        f'{e} Move it away to start this workdir afresh.') from e
  model, safe = compare(old, config)
  if model:
    raise ConfigMismatchError(
        f'the config changes the model of the run in {workdir} ({path}): '
        f'{_describe(model)}. Keep these values to resume, or use a new '
        '--workdir.')
  if safe:
    logging.info('Config changes against %s (allowed): %s.', path,
                 _describe(safe))


def write_workdir_config(config, workdir) -> None:
  """Writes `workdir/config.json`; an older, different one is kept.

  The replaced file is kept as config.previous.json (one generation).
  """
  workdir = epath.Path(workdir)
  path = workdir / workdir_config.CONFIG_FILE
  text = config.to_json_best_effort(indent=2)
  if path.is_file():
    old = path.read_text()
    if old == text:
      return
    (workdir / PREVIOUS_CONFIG_FILE).write_text(old)
  tmp = workdir / (workdir_config.CONFIG_FILE + '.tmp')
  tmp.write_text(text)
  tmp.replace(path)
