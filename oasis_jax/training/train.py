"""The OASIS training loop: jitted steps on a device mesh, checkpoints, samples.

`train_and_evaluate(config, workdir)` trains for `config.train.num_steps`
steps, resuming from the newest checkpoint in `workdir/checkpoints`. The train
state is replicated and the batch is split over the mesh's 'data' axis; the
same code runs on one device, on several, and on several processes (each
feeding its share of the global batch).

The EMA generator's BN statistics are refreshed (`ema_refresh`) before it is
sampled or evaluated: `config.ema.bn_refresh_batches` train-mode forwards on
training batches from a separate iterator (seeded by the step, so the main
data order is untouched). The refreshed statistics are used for that sample
or evaluation only and are not written back into the train state; so the
state, and therefore every checkpoint, does not depend on how often samples
were drawn, and a resumed run is exactly the uninterrupted one. (The official
code refreshes the EMA network in place; with 50 refresh batches at momentum
0.1, 99.5% of the statistics come from the refresh either way.)
"""

import contextlib
import functools
import math
import signal
import threading
from typing import Any, Callable, Mapping, Optional

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from oasis_jax.training import checkpointing
from oasis_jax.config import resolution
from oasis_jax.training import ema_refresh
from oasis_jax.runtime import host_memory
from oasis_jax.training import input_pipeline
from oasis_jax.runtime import logging_utils
from data_pipelines import palettes
from oasis_jax.runtime import sharding
from oasis_jax.training import steps
from oasis_jax.training import train_state as train_state_lib
from oasis_jax.pretrained import vgg_weights

# The pure functions of one iteration, re-exported: train_step(state, batch,
# rng, *, config) -> (state, metrics) folds state.step into rng.
train_step = steps.train_step
sample_step = steps.sample_step
create_train_state = train_state_lib.create_train_state
TrainState = train_state_lib.TrainState
abstract_train_state = train_state_lib.abstract_train_state

# evaluate_fn(state, step) -> metrics, called every config.eval.fid_every_steps
# with the EMA generator's statistics refreshed in `state.ema`.
EvaluateFn = Callable[[TrainState, int], Mapping[str, float]]

_SAMPLE_TAG = 0x5A3B1E  # Folded into the seed: the fixed sample noise.
_MIN_TILE = 128  # Pixels; smaller samples are enlarged in the grids.


def init_train_state(config, mesh: jax.sharding.Mesh) -> TrainState:
  """A fresh train state from config.seed, replicated over the mesh.

  Computed on one local device and then copied to every device of the mesh
  (through the host, which also makes it global on several processes): the
  compiled init does not depend on the mesh, so its compilation is cached
  across device counts. On a CPU it is compiled without LLVM optimizations,
  which halves the compile time of this run-once program.
  """
  rng = jax.random.PRNGKey(config.seed)
  init = jax.jit(functools.partial(create_train_state, config)).lower(rng)
  options = {}
  if resolution.resolve(config).perf.init_compile == 'unoptimized':
    options['xla_backend_optimization_level'] = 0
  state = sharding.put_replicated(jax.device_get(init.compile(options)(rng)),
                                 mesh)
  # Buffers of XLA's own: on a CPU the put arrays alias the host copy, which
  # the first step cannot donate; it would hold two states at its peak.
  return jax.jit(lambda s: jax.tree.map(jnp.copy, s))(state)


def make_train_step(config, mesh: jax.sharding.Mesh, state_sharding: Any):
  """train_step jitted over the mesh: p(state, batch, rng) -> (state, metrics).

  The state (donated) and the key are replicated, the batch is split over
  'data'; metrics come back replicated. BatchNorm statistics cover the global
  batch (XLA inserts the cross-device reductions). With config.loss.use_vgg
  the frozen VGG-19 weights are read here, once, placed replicated and
  passed to every call (an argument: not in the state, not checkpointed).

  Raises:
    vgg_weights.MissingVggWeightsError, vgg_weights.VggWeightsError: the VGG
      loss is on and its weights file is missing or not the expected one.
  """
  in_shardings = (state_sharding, sharding.batch_sharding(mesh),
                  sharding.replicated(mesh))
  jit = functools.partial(
      jax.jit, out_shardings=(state_sharding, sharding.replicated(mesh)),
      donate_argnums=0, compiler_options=steps.compiler_options(config))
  vgg = vgg_weights.load_for_config(config)
  if vgg is None:
    return jit(functools.partial(train_step, config=config),
               in_shardings=in_shardings)
  vgg_params = sharding.put_replicated(vgg[0], mesh)
  p_step = jit(lambda state, batch, rng, vgg_params: train_step(
      state, batch, rng, config=config, vgg_params=vgg_params),
               in_shardings=in_shardings + (sharding.replicated(mesh),))
  return lambda state, batch, rng: p_step(state, batch, rng, vgg_params)


class _Sampler:
  """Draws the grids colourised label | real | G | EMA G of fixed labels.

  The labels and images are the first `config.train.num_sample_images`
  examples of the validation split, the noise is fixed: successive grids show
  the same scenes.
  """

  def __init__(self, config, mesh, state_sharding, workdir: epath.Path,
               writer: logging_utils.Writer, is_chief: bool):
    self._workdir, self._writer, self._is_chief = workdir, writer, is_chief
    n = int(config.train.num_sample_images)
    devices = mesh.devices.size
    batch_size = max(1, math.ceil(n / devices)) * devices
    data_iter = input_pipeline.create_eval_iterator(
        config, split='val', batch_size=batch_size, num_examples=batch_size,
        process_index=jax.process_index(), process_count=jax.process_count())
    try:
      local = next(data_iter)
    finally:
      input_pipeline.close_iterator(data_iter)
    self._batch = sharding.global_batch(
        {k: local[k] for k in ('image', 'label', 'valid')}, mesh)
    self._num_images = n
    self._palette = palettes.for_config(config)
    self._rng = sharding.replicated_key(mesh, config.seed, _SAMPLE_TAG)
    replicated = sharding.replicated(mesh)

    def sample(state, batch, rng):
      out = sample_step(state, batch['label'], rng, config=config)
      return {**out, **batch}

    self._sample = jax.jit(
        sample, in_shardings=(state_sharding, sharding.batch_sharding(mesh),
                              replicated),
        out_shardings=replicated)

  def __call__(self, state: TrainState, step: int) -> None:
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
    if self._is_chief:
      path = self._workdir / logging_utils.SAMPLES_DIR / f'{step:08d}.png'
      logging_utils.save_png(path, grid)
      self._writer.write_image(step, 'samples', grid)
      self._writer.flush()
      logging.info('Step %d: wrote samples to %s (columns: %s).', step, path,
                   ' | '.join(logging_utils.GRID_COLUMNS[:len(columns)]))


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


_StopRequest = StopRequest  # The former name.


def _check_finite(pending: list[tuple[int, Any]],
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


def train_and_evaluate(config, workdir, *,
                       evaluate_fn: Optional[EvaluateFn] = None,
                       num_devices: Optional[int] = None,
                       stop_request: Optional[StopRequest] = None,
                       on_started: Optional[Callable[[], None]] = None
                       ) -> TrainState:
  """Trains OASIS, resuming from the newest good checkpoint in `workdir`.

  Writes `workdir/checkpoints/` (every config.train.checkpoint_every_steps and
  at the end), `workdir/tensorboard/` (losses every log_every_steps, sample
  grids) and `workdir/samples/<step>.png` (every sample_every_steps and at the
  end). SIGTERM or SIGINT: the step in flight ends, its checkpoint is written
  and the function returns (during the start-up: before the first step,
  writing nothing). A damaged checkpoint is moved aside and the one before
  it restored (checkpointing.restore_newest_good).

  Args:
    config: the run configuration (configs/*.py).
    workdir: the run's folder.
    evaluate_fn: optional evaluation, `evaluate_fn(state, step) -> metrics`,
      called every config.eval.fid_every_steps (> 0) with the EMA statistics
      refreshed; its metrics go to TensorBoard under 'eval/', and when they
      hold config.eval.best_metric the best checkpoint
      (`workdir/checkpoint_best/`) is updated.
    num_devices: use the first this many devices (default: all).
    stop_request: the signal handlers, when the caller entered them earlier
      (default: entered here).
    on_started: called once, just before the first step is dispatched (the
      command line writes config.json there).

  Returns:
    The final train state.

  Raises:
    ValueError: the global batch does not divide by the device count.
    FloatingPointError: a loss became NaN or infinite (naming the step).
    checkpointing.CheckpointError: no checkpoint of the workdir restores.
    checkpointing.CheckpointSaveError: a checkpoint could not be written.
  """
  config = resolution.resolve(config)  # The platform's formulations.
  with contextlib.ExitStack() as stack:
    if stop_request is None:
      stop_request = stack.enter_context(StopRequest())
    return _train(config, epath.Path(workdir), evaluate_fn, num_devices,
                  stop_request, on_started)


def _train(config, workdir: epath.Path, evaluate_fn: Optional[EvaluateFn],
           num_devices: Optional[int], stop: StopRequest,
           on_started: Optional[Callable[[], None]]) -> TrainState:
  """train_and_evaluate with the signal handlers in place."""
  workdir.mkdir(parents=True, exist_ok=True)
  is_chief = jax.process_index() == 0
  mesh = sharding.make_mesh(num_devices)
  sharding.check_batch_size(config.train.batch_size, mesh)
  logging.info('Mesh: %d devices (%s), %d process(es); global batch %d, %d '
               'per device.', mesh.devices.size, resolution.platform(),
               jax.process_count(), config.train.batch_size,
               config.train.batch_size // mesh.devices.size)

  abstract_state = abstract_train_state(config)
  state_sharding = sharding.state_sharding(mesh, abstract_state)
  train_iter = input_pipeline.create_train_iterator(
      config, seed=config.seed, process_index=jax.process_index(),
      process_count=jax.process_count())
  manager = checkpointing.create_manager(
      workdir, max_to_keep=config.train.keep_checkpoints)
  best_manager = None
  if evaluate_fn is not None and config.eval.best_metric:
    best_manager = checkpointing.create_best_manager(
        workdir, metric=config.eval.best_metric, mode=config.eval.best_mode)
  writer = None
  try:
    state, restored = checkpointing.restore_newest_good(
        manager, abstract_state, state_sharding,
        lambda: init_train_state(config, mesh), train_iter)
    host_memory.trim_heap()
    step = 0 if restored is None else int(restored)
    if restored is not None:
      logging.info('Resumed from the checkpoint of step %d.', step)

    num_steps = int(config.train.num_steps)
    p_train_step = make_train_step(config, mesh, state_sharding)
    # The base key (state.rng never changes); a copy, as the state is donated.
    rng = jax.jit(jnp.copy, out_shardings=sharding.replicated(mesh))(
        state.rng)
    writer = logging_utils.Writer(workdir / logging_utils.TENSORBOARD_DIR,
                                  enabled=is_chief)
    sampler = _Sampler(config, mesh, state_sharding, workdir, writer,
                       is_chief)
    refresh_fn = ema_refresh.make_refresh_step(config, mesh)
    refreshed_at = {}

    def with_refreshed_ema(state, step):
      if state.ema is None:
        return state
      if step not in refreshed_at:
        refreshed_at.clear()
        refreshed_at[step] = ema_refresh.refresh_ema(
            config, mesh, state.ema, step, refresh_fn=refresh_fn)
      return state.replace(ema=refreshed_at[step])

    train = config.train
    every = lambda k: k > 0 and step % k == 0
    pending = []  # (step, metrics on the device) since the last check.
    saved = restored  # The step of the newest checkpoint.
    first_step, timer = step + 1, logging_utils.StepTimer(step)
    in_flight = None  # The metrics of the step dispatched last.
    logging.info('Training from step %d to %d.', step, num_steps)
    while step < num_steps:
      # At most one step in flight: the flag is read once it is done, and
      # before the next is dispatched (and its batch drawn).
      if in_flight is not None:
        jax.block_until_ready(in_flight)
      if stop.should_stop(sync=step + 1 == first_step or
                          every(train.log_every_steps)):
        if pending:
          means = _check_finite(pending, saved)
          pending = []
          logging_utils.log_progress(step, num_steps, timer.rate(step),
                                     train.batch_size, means, writer)
          writer.flush()
        if step >= first_step:
          if saved != step:
            checkpointing.save(manager, step, state, train_iter)
            checkpointing.finish_saves(manager)
            saved = step
          logging.warning('Stopped at step %d on %s; checkpoint written. '
                          'Run again to continue.', step,
                          stop.signal_name or 'a signal')
        else:
          logging.warning('Stopped at step %d on %s before any step of this '
                          'run; nothing written.', step,
                          stop.signal_name or 'a signal')
        break
      if step + 1 == first_step and on_started is not None:
        on_started()
      batch = sharding.global_batch(next(train_iter), mesh)
      state, metrics = p_train_step(state, batch, rng)
      in_flight = metrics
      step += 1
      if step == first_step:  # Compiled now: time the steps that follow.
        timer = logging_utils.StepTimer(step)
        host_memory.trim_heap()  # The compiler's freed memory.
      pending.append((step, metrics))
      log_now = every(train.log_every_steps)
      last = step == num_steps
      save_now = every(train.checkpoint_every_steps) or last
      if log_now or save_now:
        means = _check_finite(pending, saved)
        pending = []
        if log_now or last:
          logging_utils.log_progress(step, num_steps, timer.rate(step),
                                     train.batch_size, means, writer)
          writer.flush()
        checkpointing.check_saves(manager)
      if save_now:
        checkpointing.save(manager, step, state, train_iter)
        saved = step
      if every(train.sample_every_steps) or last:
        sampler(with_refreshed_ema(state, step), step)
      if evaluate_fn is not None and every(config.eval.fid_every_steps):
        eval_metrics = dict(evaluate_fn(with_refreshed_ema(state, step),
                                        step))
        logging.info('Step %d: evaluation %s', step, eval_metrics)
        writer.write_scalars(step, {f'eval/{k}': v
                                    for k, v in eval_metrics.items()})
        if best_manager is not None and (
            config.eval.best_metric in eval_metrics):
          checkpointing.save_best(best_manager, step, state, eval_metrics)
    checkpointing.finish_saves(manager)
  except BaseException as e:
    if not isinstance(e, checkpointing.CheckpointSaveError):
      _finish_quietly(manager)  # The last good checkpoint, if in flight.
    raise
  finally:
    if best_manager is not None:
      _finish_quietly(best_manager)
    if writer is not None:
      writer.close()
    input_pipeline.close_iterator(train_iter)
  logging.info('Done at step %d. Checkpoints: %s, samples: %s, TensorBoard: '
               'tensorboard --logdir %s', step, manager.directory,
               workdir / logging_utils.SAMPLES_DIR,
               workdir / logging_utils.TENSORBOARD_DIR)
  return state


def _finish_quietly(manager) -> None:
  """Waits for a background save while another error is on its way."""
  try:
    checkpointing.finish_saves(manager)
  except checkpointing.CheckpointSaveError as e:
    logging.warning('%s', e)
