"""Orbax checkpoints of the train state and the data iterator.

`DIR/checkpoints/<step>/` holds `state` (the whole TrainState: both networks,
both optimizer states, the EMA generator, the step and the PRNG key) and
`data_iter` (each process's Grain iterator state, one JSON file per process).
Saves are asynchronous and atomic: Orbax writes into a temporary folder and
renames it when complete, so a run killed while saving leaves the previous
checkpoint as the latest one. The last `config.train.keep_checkpoints` are
kept.

Unattended runs (see the functions below `restore_or_init`): each training
checkpoint also holds `fingerprint`, a checksum of every array of the state;
`restore_newest_good` takes the newest checkpoint that is complete and
restores to its fingerprint, moving any other aside into
`DIR/checkpoints_damaged/` (never deleting it) with a one-line warning;
`finish_saves` turns a failed background save into one
`CheckpointSaveError` (step, path, OS error) once the temporary folder is
removed and the previous checkpoint checked.

The best-by-metric checkpoint lives in its own manager, `DIR/checkpoint_best/`,
which keeps one checkpoint: the state with the best value of
`config.eval.best_metric` (`config.eval.best_mode` 'min' or 'max') among the
metrics passed to `save_best`.

Reading runs for inference and evaluation (the last section) also lives
here: finding a checkpoint of a workdir and restoring only the generator or
the discriminator out of a saved TrainState. The inference checkpoint (a
generator's variables and its config) is inference/export_format.py.
"""

import os
import shutil
from typing import Any, Callable, Mapping, Optional, Union

from absl import logging
from etils import epath
import grain
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from oasis_jax.runtime import fatal
from oasis_jax.training import train_state as train_state_lib

CHECKPOINT_DIR = 'checkpoints'
DAMAGED_DIR = 'checkpoints_damaged'  # Checkpoints that failed to restore.
FINGERPRINT_ITEM = 'fingerprint'
BEST_CHECKPOINT_DIR = 'checkpoint_best'


def _absolute(workdir) -> epath.Path:
  """Orbax needs absolute paths; a relative workdir is taken from the cwd."""
  path = epath.Path(workdir)
  return path if path.is_absolute() else epath.Path(os.path.abspath(path))


def create_manager(workdir, *, max_to_keep: Optional[int] = 3,
                   async_save: bool = True) -> ocp.CheckpointManager:
  """The manager of `workdir/checkpoints`.

  Args:
    workdir: the run's folder.
    max_to_keep: how many of the newest checkpoints to keep (None: all).
    async_save: write in a background thread (the step loop goes on).
  """
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True,
      enable_async_checkpointing=async_save)
  return ocp.CheckpointManager(_absolute(workdir) / CHECKPOINT_DIR,
                               options=options)


def create_best_manager(workdir, *, metric: str,
                        mode: str = 'min') -> ocp.CheckpointManager:
  """The manager of `workdir/checkpoint_best`: keeps the best checkpoint.

  Args:
    workdir: the run's folder.
    metric: key of the metrics dict passed to `save_best` that ranks
      checkpoints (e.g. 'fid').
    mode: 'min' (lower is better, FID) or 'max'.
  """
  if mode not in ('min', 'max'):
    raise ValueError(f"best mode must be 'min' or 'max', got {mode!r}.")
  options = ocp.CheckpointManagerOptions(
      max_to_keep=1, best_fn=lambda metrics: float(metrics[metric]),
      best_mode=mode, keep_checkpoints_without_metrics=False, create=True,
      cleanup_tmp_directories=True)
  return ocp.CheckpointManager(_absolute(workdir) / BEST_CHECKPOINT_DIR,
                               options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         data_iter: Optional[grain.DatasetIterator] = None) -> None:
  """Starts an asynchronous save of `state` (and the iterator) at `step`.

  The iterator's state is read before this returns, so the caller may go on
  drawing batches. Call `manager.wait_until_finished()` before exiting.
  """
  items = {'state': ocp.args.StandardSave(state),
           FINGERPRINT_ITEM: ocp.args.JsonSave(
               {'leaves': fingerprint(state)})}
  if data_iter is not None:
    items['data_iter'] = grain.checkpoint.CheckpointSave(data_iter)
  try:
    manager.save(step, args=ocp.args.Composite(**items), force=True)
  except Exception as e:  # pylint: disable=broad-exception-caught
    # Orbax waits for the previous save first: its failure surfaces here.
    _raise_save_error(manager, e)
  _IN_FLIGHT[id(manager)] = step


def save_best(manager: ocp.CheckpointManager, step: int, state: Any,
              metrics: Mapping[str, float]) -> bool:
  """Saves `state` as the best checkpoint if `metrics` beat the kept one.

  Returns:
    Whether `step` is now the best checkpoint (known once the save ends).
  """
  metrics = {k: float(v) for k, v in metrics.items()}
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state)), metrics=metrics, force=True)
  manager.wait_until_finished()
  return manager.best_step() == step


def abstract_target(abstract_state: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the shardings the state is restored into."""
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      abstract_state, shardings)


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: Any,
            shardings: Any,
            data_iter: Optional[grain.DatasetIterator] = None) -> Any:
  """The state saved at `step`, placed with `shardings`; restores the iterator.

  Args:
    manager: the checkpoint manager.
    step: the step to restore.
    abstract_state: the state's structure (`jax.eval_shape` of its init).
    shardings: a tree like `abstract_state` of the target shardings.
    data_iter: if given, its position is set to the saved one (in place).

  Returns:
    The restored state: the structure of `abstract_state`, global arrays.
  """
  items = {'state': ocp.args.StandardRestore(
      abstract_target(abstract_state, shardings))}
  if data_iter is not None:
    items['data_iter'] = grain.checkpoint.CheckpointRestore(data_iter)
  restored = manager.restore(step, args=ocp.args.Composite(**items))
  return restored['state']


def restore_or_init(manager: ocp.CheckpointManager, abstract_state: Any,
                    shardings: Any, init_fn: Callable[[], Any],
                    data_iter: Optional[grain.DatasetIterator] = None
                    ) -> tuple[Any, Optional[int]]:
  """Restores the newest checkpoint, or calls `init_fn()` if there is none.

  Returns:
    (state, the restored step or None when freshly initialized).
  """
  step = manager.latest_step()
  if step is None:
    logging.info('No checkpoint in %s: initializing.', manager.directory)
    return init_fn(), None
  logging.info('Restoring the checkpoint of step %d from %s.', step,
               manager.directory)
  return restore(manager, step, abstract_state, shardings, data_iter), step


# Unattended runs: fingerprints, the fallback restore, failed saves.


class CheckpointError(fatal.Error):
  """No checkpoint of a workdir restores (the message says which and why)."""


class CheckpointSaveError(fatal.Error):
  """A checkpoint save failed: names the step, the folder and the OS error."""


class DamagedCheckpointError(fatal.Error):
  """One checkpoint is incomplete or does not restore to its fingerprint."""


_IN_FLIGHT: dict[int, int] = {}  # id(manager) -> step of its last save.
_TMP_MARK = '.orbax-checkpoint-tmp'


def _words(x: jax.Array) -> jax.Array:
  """`x`'s bits as uint32 words (one per element; two for 64-bit types)."""
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  size = jnp.dtype(x.dtype).itemsize
  if size == 4:
    return jax.lax.bitcast_convert_type(x, jnp.uint32)
  if size == 8:
    return jax.lax.bitcast_convert_type(x, jnp.uint32)  # [..., 2]
  unsigned = {1: jnp.uint8, 2: jnp.uint16}[size]
  return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


@jax.jit
def _fingerprints(leaves: list[jax.Array]) -> jax.Array:
  """[len(leaves)] uint32: sum of word_i * (2 i + 1) mod 2^32 per leaf.

  Odd weights: flipping any one bit changes the sum (2^k * odd != 0 mod
  2^32), and moving a value changes it too.
  """
  sums = []
  for leaf in leaves:
    words = _words(leaf).reshape(-1)
    weights = jnp.arange(words.size, dtype=jnp.uint32) * 2 + 1
    sums.append(jnp.sum(words * weights, dtype=jnp.uint32))
  return jnp.stack(sums) if sums else jnp.zeros([0], jnp.uint32)


def fingerprint(state: Any) -> list[int]:
  """A checksum per array leaf of `state` (in tree order), as ints."""
  leaves = [x for x in jax.tree.leaves(state) if hasattr(x, 'dtype')]
  return [int(v) for v in np.asarray(jax.device_get(_fingerprints(leaves)))]


def _required_files(with_iterator: bool) -> list[str]:
  files = ['_CHECKPOINT_METADATA', 'state/_METADATA',
           'state/manifest.ocdbt']
  if with_iterator:
    files.append(f'data_iter/process_{jax.process_index()}-of-'
                 f'{jax.process_count()}.json')
  return files


def missing_files(manager: ocp.CheckpointManager, step: int,
                  with_iterator: bool = True) -> list[str]:
  """The files a complete training checkpoint has and `step`'s lacks."""
  step_dir = epath.Path(manager.directory) / str(step)
  return [f for f in _required_files(with_iterator)
          if not (step_dir / f).exists()]


def _step_dirs(manager: ocp.CheckpointManager) -> list[int]:
  """Steps of the integer-named folders (Orbax counts even empty ones)."""
  directory = epath.Path(manager.directory)
  if not directory.exists():
    return []
  return sorted(int(p.name) for p in directory.iterdir()
                if p.name.isdigit() and p.is_dir())


def move_aside(manager: ocp.CheckpointManager, step: int,
               reason: str) -> epath.Path:
  """Moves checkpoint `step` into DIR/checkpoints_damaged/ (one warning).

  Returns:
    Where it now is: `checkpoints_damaged/<step>` (or `<step>.<k>`).
  """
  source = epath.Path(manager.directory) / str(step)
  damaged = epath.Path(manager.directory).parent / DAMAGED_DIR
  target = damaged / str(step)
  k = 1
  while target.exists():
    target, k = damaged / f'{step}.{k}', k + 1
  if jax.process_index() == 0:
    damaged.mkdir(parents=True, exist_ok=True)
    source.rename(target)
  logging.warning('Checkpoint %s is damaged (%s): moved it to %s; trying '
                  'the one before.', source, reason, target)
  _sync('move_aside')
  manager.reload()
  return target


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'oasis_jax checkpointing {name}')


def _all_ok(ok: bool) -> bool:
  """Whether `ok` holds on every process."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


def _restore_checked(manager: ocp.CheckpointManager, step: int,
                     abstract_state: Any, shardings: Any,
                     data_iter: Optional[grain.DatasetIterator]) -> Any:
  """`restore` plus the completeness and fingerprint checks.

  Raises:
    DamagedCheckpointError: why `step` does not restore.
  """
  step_dir = epath.Path(manager.directory) / str(step)
  if not any(step_dir.iterdir()):
    raise DamagedCheckpointError('an empty folder')
  missing = missing_files(manager, step, with_iterator=data_iter is not None)
  if missing:
    raise DamagedCheckpointError(f'missing {", ".join(missing)}')
  try:
    state = restore(manager, step, abstract_state, shardings, data_iter)
  except Exception as e:  # pylint: disable=broad-exception-caught
    raise DamagedCheckpointError(
        f'does not restore: {_first_line(e)}') from e
  saved = epath.Path(manager.directory) / str(step) / FINGERPRINT_ITEM
  if saved.exists():  # Checkpoints of older versions have none.
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          **{FINGERPRINT_ITEM: ocp.args.JsonRestore()}))
      expected = list(restored[FINGERPRINT_ITEM]['leaves'])
    except Exception as e:  # pylint: disable=broad-exception-caught
      raise DamagedCheckpointError(
          f'unreadable fingerprint: {_first_line(e)}') from e
    actual = fingerprint(state)
    if actual != expected:
      bad = [i for i, (a, b) in enumerate(zip(actual, expected)) if a != b]
      raise DamagedCheckpointError(
          f'arrays differ from their fingerprint (leaves {bad[:5]})')
  return state


def _first_line(error: BaseException, limit: int = 200) -> str:
  """The first line of `error`'s message, at most `limit` characters."""
  text = str(error).split('. See full TensorStore details')[0]
  text = text.strip().splitlines()
  line = text[0] if text else type(error).__name__
  if isinstance(error, KeyError):
    line = f'KeyError {line}'
  return line if len(line) <= limit else line[:limit - 3] + '...'


def restore_newest_good(manager: ocp.CheckpointManager, abstract_state: Any,
                        shardings: Any, init_fn: Callable[[], Any],
                        data_iter: Optional[grain.DatasetIterator] = None
                        ) -> tuple[Any, Optional[int]]:
  """Restores the newest checkpoint that restores completely.

  A checkpoint that is incomplete (an empty or partial step folder, a
  missing file), does not restore, or whose arrays differ from the
  fingerprint saved with them is moved into DIR/checkpoints_damaged/ with a
  one-line warning naming it and the reason, and the next older one is
  tried. With no checkpoint at all, `init_fn()` gives the state.

  Args:
    manager: the training checkpoint manager.
    abstract_state: the state's structure (`jax.eval_shape` of its init).
    shardings: a tree like `abstract_state` of the target shardings.
    init_fn: the fresh state, when there is no checkpoint.
    data_iter: if given, set to the restored checkpoint's position.

  Returns:
    (state, the restored step or None when freshly initialized).

  Raises:
    CheckpointError: there were checkpoints but none restores (they are in
      checkpoints_damaged/), or every checkpoint was moved aside earlier.
  """
  directory = epath.Path(manager.directory)
  moved = []
  for step in reversed(_step_dirs(manager)):
    logging.info('Restoring the checkpoint of step %d from %s.', step,
                 directory)
    try:
      state = _restore_checked(manager, step, abstract_state, shardings,
                               data_iter)
      ok, reason = True, ''
    except DamagedCheckpointError as e:
      state, ok, reason = None, False, str(e)
    if _all_ok(ok):
      return state, step
    moved.append(str(move_aside(manager, step, reason or 'on another host')))
  damaged = directory.parent / DAMAGED_DIR
  if moved or (damaged.exists() and any(damaged.iterdir())):
    raise CheckpointError(
        f'no checkpoint in {directory} restores; the damaged ones are in '
        f'{damaged}. Recover one into {directory}, or move {damaged} away '
        'to train from scratch.')
  logging.info('No checkpoint in %s: initializing.', directory)
  return init_fn(), None


def _os_error(error: BaseException) -> Optional[OSError]:
  """The first OSError in `error`'s causes, contexts and groups."""
  seen, todo = set(), [error]
  while todo:
    e = todo.pop(0)
    if e is None or id(e) in seen:
      continue
    seen.add(id(e))
    if isinstance(e, OSError):
      return e
    todo.extend([e.__cause__, e.__context__,
                 *getattr(e, 'exceptions', ())])
  return None


def remove_temporary_folders(manager: ocp.CheckpointManager) -> list[str]:
  """Deletes the `*.orbax-checkpoint-tmp*` folders of unfinished saves."""
  directory = epath.Path(manager.directory)
  removed = []
  if jax.process_index() == 0 and directory.exists():
    for path in directory.iterdir():
      if _TMP_MARK in path.name:
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
  return removed


def _raise_save_error(manager: ocp.CheckpointManager,
                      error: BaseException) -> None:
  """Cleans up after a failed save; raises CheckpointSaveError."""
  step = _IN_FLIGHT.pop(id(manager), None)
  remove_temporary_folders(manager)
  os_error = _os_error(error)
  cause = (f'[Errno {os_error.errno}] {os_error.strerror or os_error}'
           if os_error is not None and os_error.errno else
           _first_line(os_error or error))
  kept = [s for s in _step_dirs(manager) if s != step and not
          missing_files(manager, s, with_iterator=False)]
  previous = (f'the checkpoint of step {kept[-1]} is intact' if kept else
              'there is no earlier checkpoint')
  path = epath.Path(manager.directory) / str(step if step is not None else '?')
  raise CheckpointSaveError(
      f'saving the checkpoint of step {step} to {path} failed: {cause}; '
      f'{previous}.') from error


def check_saves(manager: ocp.CheckpointManager) -> None:
  """Raises CheckpointSaveError if a finished background save failed."""
  try:
    manager.check_for_errors()
  except Exception as e:  # pylint: disable=broad-exception-caught
    _raise_save_error(manager, e)


def finish_saves(manager: ocp.CheckpointManager) -> None:
  """Waits for the background save; CheckpointSaveError if it failed."""
  try:
    manager.wait_until_finished()
  except Exception as e:  # pylint: disable=broad-exception-caught
    _raise_save_error(manager, e)
  _IN_FLIGHT.pop(id(manager), None)


# ----------------------------------------------------------------------------
# Reading a training workdir: a checkpoint, one network of it. (Its config:
# oasis_jax/config/workdir.py.)
# ----------------------------------------------------------------------------


def _read_only_manager(directory: str) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(read_only=True,
                                                      create=False))


def find_checkpoint(workdir: str, step: Union[str, int] = 'latest'
                    ) -> tuple[str, int]:
  """(checkpoint manager directory, step) of 'latest', 'best' or a step.

  Raises:
    FileNotFoundError: no such checkpoint; the message lists what exists.
  """
  main_dir = os.path.join(workdir, CHECKPOINT_DIR)
  best_dir = os.path.join(workdir, BEST_CHECKPOINT_DIR)
  steps_of = lambda d: (list(_read_only_manager(d).all_steps())
                        if os.path.isdir(d) else [])
  if step == 'best':
    found = steps_of(best_dir)
    if not found:
      raise FileNotFoundError(
          f'{best_dir}: no best checkpoint (written only when the run '
          'evaluates config.eval.best_metric); use step=latest.')
    return best_dir, max(found)
  main_steps = steps_of(main_dir)
  if step == 'latest':
    if not main_steps:
      raise FileNotFoundError(f'{main_dir}: no checkpoints.')
    return main_dir, max(main_steps)
  try:
    step = int(step)
  except (TypeError, ValueError):
    raise ValueError(f"step must be 'latest', 'best' or a step number, got "
                     f'{step!r}.') from None
  if step in main_steps:
    return main_dir, step
  if step in steps_of(best_dir):
    return best_dir, step
  raise FileNotFoundError(f'{workdir}: no checkpoint of step {step}; steps: '
                          f'{sorted(main_steps)} (best: {steps_of(best_dir)}).')


def restore_part(directory: str, step: int, target: Any) -> Any:
  """Reads the subtree `target` (ShapeDtypeStructs) of a saved TrainState.

  Returns:
    `target`'s structure, numpy arrays on the host.
  """
  restore_args = jax.tree.map(
      lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
  restored = _read_only_manager(directory).restore(
      step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
          item=target, restore_args=restore_args, partial_restore=True)))
  return jax.tree.map(np.asarray, restored['state'])


def restore_generator(directory: str, step: int, config) -> tuple[Any, str]:
  """Reads only the generator to sample from out of a saved TrainState.

  Returns:
    ({'params', 'batch_stats'} numpy arrays, 'ema' or 'generator').
  """
  abstract = train_state_lib.abstract_train_state(config)
  if abstract.ema is not None:
    return dict(restore_part(directory, step,
                             {'ema': abstract.ema})['ema']), 'ema'
  g = abstract.generator
  target = {'generator': {'params': g.params, 'batch_stats': g.batch_stats}}
  return dict(restore_part(directory, step, target)['generator']), 'generator'


def restore_discriminator(directory: str, step: int, config) -> Any:
  """The discriminator's {'params', 'batch_stats'} of a saved TrainState."""
  d = train_state_lib.abstract_train_state(config).discriminator
  target = {'discriminator': {'params': d.params,
                              'batch_stats': d.batch_stats}}
  return dict(restore_part(directory, step, target)['discriminator'])
