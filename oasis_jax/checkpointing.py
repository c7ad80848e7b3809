"""Orbax checkpoints of the train state and the data iterator.

`DIR/checkpoints/<step>/` holds `state` (the whole TrainState: both networks,
both optimizer states, the EMA generator, the step and the PRNG key) and
`data_iter` (each process's Grain iterator state, one JSON file per process).
Saves are asynchronous and atomic: Orbax writes into a temporary folder and
renames it when complete, so a run killed while saving leaves the previous
checkpoint as the latest one. The last `config.train.keep_checkpoints` are
kept.

The best-by-metric checkpoint lives in its own manager, `DIR/checkpoint_best/`,
which keeps one checkpoint: the state with the best value of
`config.eval.best_metric` (`config.eval.best_mode` 'min' or 'max') among the
metrics passed to `save_best`.
"""

import os
from typing import Any, Callable, Mapping, Optional

from absl import logging
from etils import epath
import grain
import jax
import orbax.checkpoint as ocp

CHECKPOINT_DIR = 'checkpoints'
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
  items = {'state': ocp.args.StandardSave(state)}
  if data_iter is not None:
    items['data_iter'] = grain.checkpoint.CheckpointSave(data_iter)
  manager.save(step, args=ocp.args.Composite(**items), force=True)


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
