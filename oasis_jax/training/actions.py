"""The training loop's periodic actions: log, save, sample, evaluate, stop.

Each action is called after every step as `action(step, state, metrics)`
and decides from its own interval whether to act: `LossLog` (the NaN check
and the progress line), `Checkpoints` (saves), `Sampler` (image grids) and
`Evaluator` (evaluate_fn and the best checkpoint). `StopRequest` turns
SIGTERM / SIGINT into a flag that the loop reads before each step.
"""

import math
import signal
import threading
from typing import Any, Callable, Mapping, Optional

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import numpy as np

from data_pipelines import palettes
from oasis_jax.runtime import logging_utils
from oasis_jax.runtime import sharding
from oasis_jax.training import checkpointing
from oasis_jax.training import ema_refresh
from oasis_jax.training import input_pipeline
from oasis_jax.training import steps
from oasis_jax.training import train_state as train_state_lib

# The metrics of one step: a flat dict of scalars, still on the device.
Metrics = Mapping[str, jax.Array]
# evaluate_fn(state, step) -> metrics, called every config.eval.fid_every_steps
# with the EMA generator's statistics refreshed in `state.ema`.
EvaluateFn = Callable[[train_state_lib.TrainState, int], Mapping[str, float]]

_SAMPLE_TAG = 0x5A3B1E  # Folded into the seed: the fixed sample noise.
_MIN_TILE = 128  # Pixels; smaller samples are enlarged in the grids.


def every(step: int, period: int) -> bool:
  """Whether `step` is a multiple of `period`; never when period <= 0."""
  return period > 0 and step % period == 0


def check_finite(pending: list[tuple[int, Metrics]],
                 last_saved: Optional[int] = None) -> dict[str, float]:
  """Fetches the metrics of the steps since the last check; their means.

  Args:
    pending: (step, metrics on the device) of the steps since the last check.
    last_saved: the step of the newest checkpoint (None: there is none).

  Raises:
    FloatingPointError: a loss is NaN or infinite; names the first such step
      and the checkpoint that is kept.
  """
  fetched = jax.device_get([m for _, m in pending])
  for (step, _), metrics in zip(pending, fetched):
    bad = {k: float(v) for k, v in metrics.items() if not np.isfinite(v)}
    if bad:
      kept = ('no checkpoint was written before it' if last_saved is None
              else f'the checkpoint of step {last_saved} is kept')
      raise FloatingPointError(
          f'Non-finite loss at step {step}: {bad}. Stopped; {kept}.')
  return {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}


def finish_quietly(manager) -> None:
  """Waits for a background save while another error is on its way."""
  try:
    checkpointing.finish_saves(manager)
  except checkpointing.CheckpointSaveError as e:
    logging.warning('%s', e)


class StopRequest:
  """SIGTERM / SIGINT set a flag; the loop ends after the step in flight.

  The loop reads the flag before dispatching each step (and keeps at most
  one step in flight), so no step starts after the signal is seen. Entered
  before the start-up (restore, compilation), a signal there ends the run
  before its first step, with nothing written. A second signal of the same
  kind gets the previous handler (so a second Ctrl-C interrupts at once).
  With several processes, the flag is agreed on at log steps (a
  collective), so that all processes stop at the same step.
  """

  def __init__(self):
    self._requested = None  # The name of the signal received.
    self._previous = {}

  @property
  def signal_name(self) -> Optional[str]:
    """'SIGTERM' or 'SIGINT' once received, else None."""
    return self._requested

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    name = signal.Signals(signum).name
    logging.warning('Received %s: stopping after the step in flight.', name)
    self._requested = self._requested or name
    signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

  def should_stop(self, sync: bool) -> bool:
    """Whether to stop now; with several processes only when `sync`."""
    if jax.process_count() == 1:
      return self._requested is not None
    if not sync:
      return False
    flags = multihost_utils.process_allgather(
        np.int32(self._requested is not None))
    return bool(np.any(flags))


class Checkpoints:
  """Saves the train state every train.checkpoint_every_steps and at the end.

  Saves run in the background (Orbax): `check` raises the error of a failed
  one, `finish` waits for the last. As a context manager, on an error other
  than a failed save it waits for the save in flight (the last good
  checkpoint) before the error goes on.
  """

  def __init__(self, config, workdir: epath.Path, train_iter):
    self._manager = checkpointing.create_manager(
        workdir, max_to_keep=config.train.keep_checkpoints)
    self._iter = train_iter
    self._every = int(config.train.checkpoint_every_steps)
    self._num_steps = int(config.train.num_steps)
    self._start = None  # The step this run started from.
    self.saved = None  # The step of the newest checkpoint (None: none).

  @property
  def directory(self) -> epath.Path:
    return epath.Path(self._manager.directory)

  def restore(self, abstract_state: Any, state_sharding: Any,
              init_fn: Callable[[], Any]) -> tuple[Any, int]:
    """(state, step): the newest good checkpoint, else `init_fn()` at 0."""
    state, restored = checkpointing.restore_newest_good(
        self._manager, abstract_state, state_sharding, init_fn, self._iter)
    self.saved = restored
    self._start = 0 if restored is None else int(restored)
    if restored is not None:
      logging.info('Resumed from the checkpoint of step %d.', self._start)
    return state, self._start

  def due(self, step: int) -> bool:
    """Whether `step` is a save step (the interval's or the last)."""
    return every(step, self._every) or step == self._num_steps

  def __call__(self, step: int, state: Any, metrics: Metrics) -> None:
    del metrics
    if self.due(step):
      self.save(step, state)

  def save(self, step: int, state: Any) -> None:
    """Starts saving `state`, unless it is saved or no step has changed it."""
    if step not in (self.saved, self._start):
      checkpointing.save(self._manager, step, state, self._iter)
      self.saved = step

  def check(self) -> None:
    """Raises CheckpointSaveError if a finished background save failed."""
    checkpointing.check_saves(self._manager)

  def finish(self) -> None:
    """Waits for the background save; CheckpointSaveError if it failed."""
    checkpointing.finish_saves(self._manager)

  def __enter__(self):
    return self

  def __exit__(self, exc_type, exc, traceback):
    del exc_type, traceback
    if exc is not None and not isinstance(
        exc, checkpointing.CheckpointSaveError):
      finish_quietly(self._manager)


class LossLog:
  """The losses: checked at log and save steps, their means logged.

  The metrics stay on the device until a check fetches those of every step
  since the last one; a NaN or infinite loss stops the run there, before
  that step's state can be saved. At log steps (every
  train.log_every_steps and the last step) the means go to the console and
  TensorBoard with the steps per second since the last log line.
  """

  def __init__(self, config, writer: logging_utils.Writer,
               checkpoints: Checkpoints, start_step: int):
    self._num_steps = int(config.train.num_steps)
    self._batch_size = int(config.train.batch_size)
    self._every = int(config.train.log_every_steps)
    self._writer, self._checkpoints = writer, checkpoints
    self._first_step = start_step + 1
    self._timer = logging_utils.StepTimer(start_step)
    self._pending = []  # (step, metrics on the device) since the last check.

  def __call__(self, step: int, state: Any, metrics: Metrics) -> None:
    del state
    if step == self._first_step:  # Compiled now: time the steps that follow.
      self._timer = logging_utils.StepTimer(step)
    self._pending.append((step, metrics))
    log_now = every(step, self._every) or step == self._num_steps
    if log_now or self._checkpoints.due(step):
      self.flush(step, log=log_now)

  def flush(self, step: int, log: bool = True) -> None:
    """Checks the steps since the last check (and the saves); logs them."""
    if self._pending:
      means = check_finite(self._pending, self._checkpoints.saved)
      self._pending = []
      if log:
        logging_utils.log_progress(step, self._num_steps,
                                   self._timer.rate(step), self._batch_size,
                                   means, self._writer)
        self._writer.flush()
    self._checkpoints.check()


class RefreshedEma:
  """The state with its EMA generator's BN statistics refreshed for a step.

  A sample and an evaluation at the same step share one refresh; the train
  state itself is left as it is (see train.py).
  """

  def __init__(self, config, mesh: jax.sharding.Mesh):
    self._config, self._mesh = config, mesh
    self._refresh_fn = ema_refresh.make_refresh_step(config, mesh)
    self._step, self._ema = None, None

  def __call__(self, state: Any, step: int) -> Any:
    if state.ema is None:
      return state
    if step != self._step:
      self._ema = ema_refresh.refresh_ema(self._config, self._mesh, state.ema,
                                          step, refresh_fn=self._refresh_fn)
      self._step = step
    return state.replace(ema=self._ema)


class Sampler:
  """Draws the grids colourised label | real | G | EMA G of fixed labels.

  Every train.sample_every_steps and at the last step. The labels and images
  are the first `config.train.num_sample_images` examples of the validation
  split, the noise is fixed: successive grids show the same scenes.
  """

  def __init__(self, config, mesh, state_sharding, workdir: epath.Path,
               writer: logging_utils.Writer, ema: RefreshedEma):
    self._workdir, self._writer, self._ema = workdir, writer, ema
    self._every = int(config.train.sample_every_steps)
    self._num_steps = int(config.train.num_steps)
    self._num_images = int(config.train.num_sample_images)
    self._batch = self._read_batch(config, mesh)
    self._palette = palettes.for_config(config)
    self._rng = sharding.replicated_key(mesh, config.seed, _SAMPLE_TAG)

    def sample(state, batch, rng):
      out = steps.sample_step(state, batch['label'], rng, config=config)
      return {**out, **batch}

    self._sample = jax.jit(
        sample, in_shardings=(state_sharding, sharding.batch_sharding(mesh),
                              sharding.replicated(mesh)),
        out_shardings=sharding.replicated(mesh))

  def _read_batch(self, config, mesh) -> dict[str, jax.Array]:
    """The first examples of the validation split, a global batch."""
    devices = mesh.devices.size
    batch_size = max(1, math.ceil(self._num_images / devices)) * devices
    data_iter = input_pipeline.create_eval_iterator(
        config, split='val', batch_size=batch_size, num_examples=batch_size,
        process_index=jax.process_index(), process_count=jax.process_count())
    try:
      local = next(data_iter)
    finally:
      input_pipeline.close_iterator(data_iter)
    return sharding.global_batch(
        {k: local[k] for k in ('image', 'label', 'valid')}, mesh)

  def __call__(self, step: int, state: Any, metrics: Metrics) -> None:
    del metrics
    if every(step, self._every) or step == self._num_steps:
      self.draw(self._ema(state, step), step)

  def draw(self, state: Any, step: int) -> None:
    """Writes the grid of `state` (EMA statistics already refreshed)."""
    out = jax.device_get(self._sample(state, self._batch, self._rng))
    keep = np.flatnonzero(out['valid'])[:self._num_images]
    columns = [palettes.colorize(out['label'][keep], self._palette),
               out['image'][keep].astype(np.uint8),
               logging_utils.to_uint8(out['generator'][keep])]
    if 'ema' in out:
      columns.append(logging_utils.to_uint8(out['ema'][keep]))
    # Tiles of at least _MIN_TILE pixels, so small images stay visible.
    scale = max(1, _MIN_TILE // max(columns[0].shape[1:3]))
    grid = logging_utils.make_grid(columns, scale=scale)
    if jax.process_index() == 0:
      path = self._workdir / logging_utils.SAMPLES_DIR / f'{step:08d}.png'
      logging_utils.save_png(path, grid)
      self._writer.write_image(step, 'samples', grid)
      self._writer.flush()
      logging.info('Step %d: wrote samples to %s (columns: %s).', step, path,
                   ' | '.join(logging_utils.GRID_COLUMNS[:len(columns)]))


class Evaluator:
  """Calls evaluate_fn every eval.fid_every_steps; keeps the best checkpoint.

  The metrics go to TensorBoard under 'eval/'; when they hold
  eval.best_metric, the state is offered to `workdir/checkpoint_best/`. A
  context manager: the best checkpoint's save is finished on exit.
  """

  def __init__(self, config, workdir: epath.Path, evaluate_fn: EvaluateFn,
               writer: logging_utils.Writer, ema: RefreshedEma):
    self._evaluate_fn, self._writer, self._ema = evaluate_fn, writer, ema
    self._every = int(config.eval.fid_every_steps)
    self._metric = config.eval.best_metric
    self._best = None
    if self._metric:
      self._best = checkpointing.create_best_manager(
          workdir, metric=self._metric, mode=config.eval.best_mode)

  def __call__(self, step: int, state: Any, metrics: Metrics) -> None:
    del metrics
    if not every(step, self._every):
      return
    results = dict(self._evaluate_fn(self._ema(state, step), step))
    logging.info('Step %d: evaluation %s', step, results)
    self._writer.write_scalars(step, {f'eval/{k}': v
                                      for k, v in results.items()})
    if self._best is not None and self._metric in results:
      checkpointing.save_best(self._best, step, state, results)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    if self._best is not None:
      finish_quietly(self._best)
