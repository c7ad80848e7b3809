"""The OASIS training loop: jitted steps on a device mesh, checkpoints, samples.

`train_and_evaluate(config, workdir)` trains for `config.train.num_steps`
steps, resuming from the newest checkpoint in `workdir/checkpoints`. The train
state is replicated and the batch is split over the mesh's 'data' axis; the
same code runs on one device, on several, and on several processes (each
feeding its share of the global batch).

The EMA generator's BN statistics are refreshed (`refresh_ema`) before it is
sampled or evaluated: `config.ema.bn_refresh_batches` train-mode forwards on
training batches from a separate iterator (seeded by the step, so the main
data order is untouched). The refreshed statistics are used for that sample
or evaluation only and are not written back into the train state; so the
state, and therefore every checkpoint, does not depend on how often samples
were drawn, and a resumed run is exactly the uninterrupted one. (The official
code refreshes the EMA network in place; with 50 refresh batches at momentum
0.1, 99.5% of the statistics come from the refresh either way.)
"""

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

from oasis_jax import checkpointing
from oasis_jax import config_lib
from oasis_jax import host_memory
from oasis_jax import input_pipeline
from oasis_jax import logging_utils
from oasis_jax import palettes
from oasis_jax import sharding
from oasis_jax import steps
from oasis_jax import train_state as train_state_lib

# The pure functions of one iteration, re-exported: train_step(state, batch,
# rng, *, config) -> (state, metrics) folds state.step into rng.
train_step = steps.train_step
sample_step = steps.sample_step
create_train_state = train_state_lib.create_train_state
TrainState = train_state_lib.TrainState

# evaluate_fn(state, step) -> metrics, called every config.eval.fid_every_steps
# with the EMA generator's statistics refreshed in `state.ema`.
EvaluateFn = Callable[[TrainState, int], Mapping[str, float]]

_SAMPLE_TAG = 0x5A3B1E  # Folded into the seed: the fixed sample noise.
_REFRESH_TAG = 0x2EF5E5  # Folded into the seed: noise of the EMA refresh.
_MIN_TILE = 128  # Pixels; smaller samples are enlarged in the grids.


def abstract_train_state(config) -> TrainState:
  """The train state's shapes and dtypes, without computing anything."""
  return jax.eval_shape(functools.partial(create_train_state, config),
                        jax.random.PRNGKey(config.seed))


def _with_optimizers(state: TrainState, template: TrainState) -> TrainState:
  """`state` with `template`'s optimizer objects (static pytree metadata).

  create_train_state builds new optax objects on every call; states built by
  different calls would have different tree structures (and recompile the
  jitted step). Every state of a run takes the abstract state's ones.
  """
  return state.replace(g_tx=template.g_tx, d_tx=template.d_tx)


def init_train_state(config, mesh: jax.sharding.Mesh,
                     abstract_state: TrainState) -> TrainState:
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
  if config_lib.resolve(config).perf.init_compile == 'unoptimized':
    options['xla_backend_optimization_level'] = 0
  state = sharding.put_replicated(jax.device_get(init.compile(options)(rng)),
                                 mesh)
  # Buffers of XLA's own: on a CPU the put arrays alias the host copy, which
  # the first step cannot donate; it would hold two states at its peak.
  state = jax.jit(lambda s: jax.tree.map(jnp.copy, s))(state)
  return _with_optimizers(state, abstract_state)


def make_train_step(config, mesh: jax.sharding.Mesh, state_sharding: Any):
  """train_step jitted over the mesh: p(state, batch, rng) -> (state, metrics).

  The state (donated) and the key are replicated, the batch is split over
  'data'; metrics come back replicated. BatchNorm statistics cover the global
  batch (XLA inserts the cross-device reductions).
  """
  return jax.jit(
      functools.partial(train_step, config=config),
      in_shardings=(state_sharding, sharding.batch_sharding(mesh),
                    sharding.replicated(mesh)),
      out_shardings=(state_sharding, sharding.replicated(mesh)),
      donate_argnums=0, compiler_options=steps.compiler_options(config))


def _replicated_key(mesh, seed: int, *folds: int) -> jax.Array:
  """PRNGKey(seed) with `folds` folded in, as a replicated global array."""
  key = jax.random.PRNGKey(seed)
  for f in folds:
    key = jax.random.fold_in(key, f)
  return sharding.put_replicated(np.asarray(key), mesh)


def refresh_ema(config, mesh: jax.sharding.Mesh, ema: Any, step: int,
                *, refresh_fn: Optional[Callable[..., Any]] = None) -> Any:
  """The EMA generator's variables with BN statistics re-estimated.

  Runs `config.ema.bn_refresh_batches` train-mode forwards (no gradient) on
  training batches of a separate iterator seeded by (config.seed, step), so
  the same step always sees the same batches.

  Args:
    config: the run configuration.
    mesh: the device mesh.
    ema: {'params', 'batch_stats'} of the EMA generator (replicated).
    step: the training step (selects the refresh batches and noise).
    refresh_fn: the jitted refresh step (made here if not given).

  Returns:
    The refreshed {'params', 'batch_stats'}; `ema` itself is unchanged.
  """
  num_batches = int(config.ema.bn_refresh_batches)
  if num_batches <= 0:
    return ema
  if refresh_fn is None:
    refresh_fn = make_refresh_step(config, mesh)
  seed = int(np.random.SeedSequence([config.seed, _REFRESH_TAG, step])
             .generate_state(1)[0])
  data_iter = input_pipeline.create_train_iterator(
      config, seed=seed, process_index=jax.process_index(),
      process_count=jax.process_count())
  try:
    for i in range(num_batches):
      label = sharding.global_batch(
          {'label': next(data_iter)['label']}, mesh)['label']
      ema = refresh_fn(ema, label, _replicated_key(
          mesh, config.seed, _REFRESH_TAG, step, i))
  finally:
    _close(data_iter)
  return ema


def make_refresh_step(config, mesh: jax.sharding.Mesh):
  """steps.refresh_stats_step jitted over the mesh (labels split on 'data')."""
  return jax.jit(
      functools.partial(steps.refresh_stats_step, config=config),
      in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh),
                    sharding.replicated(mesh)),
      out_shardings=sharding.replicated(mesh))


def _close(data_iter) -> None:
  close = getattr(data_iter, 'close', None)
  if close is not None:
    close()


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
      _close(data_iter)
    self._batch = sharding.global_batch(
        {k: local[k] for k in ('image', 'label', 'valid')}, mesh)
    self._num_images = n
    self._palette = palettes.for_config(config)
    self._rng = _replicated_key(mesh, config.seed, _SAMPLE_TAG)
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


class _StopRequest:
  """SIGTERM / SIGINT set a flag; the loop ends after the current step.

  A second signal of the same kind gets the previous handler (so a second
  Ctrl-C interrupts at once). With several processes, the flag is agreed on
  at log steps (a collective), so that all processes stop at the same step.
  """

  def __init__(self):
    self._requested = False
    self._previous = {}

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
    logging.warning('Received %s: stopping after the current step.',
                    signal.Signals(signum).name)
    self._requested = True
    signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

  def should_stop(self, sync: bool) -> bool:
    """Whether to stop now; with several processes only when `sync`."""
    if jax.process_count() == 1:
      return self._requested
    if not sync:
      return False
    flags = multihost_utils.process_allgather(np.int32(self._requested))
    return bool(np.any(flags))


def _check_finite(pending: list[tuple[int, Any]]) -> dict[str, float]:
  """Fetches the metrics of the steps since the last check; their means.

  Raises:
    FloatingPointError: a loss is NaN or infinite; names the first such step.
  """
  fetched = jax.device_get([m for _, m in pending])
  for (step, _), metrics in zip(pending, fetched):
    bad = {k: float(v) for k, v in metrics.items() if not np.isfinite(v)}
    if bad:
      raise FloatingPointError(
          f'Non-finite loss at step {step}: {bad}. Stopping; the last '
          'checkpoint before it is kept.')
  return {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}


def train_and_evaluate(config, workdir, *,
                       evaluate_fn: Optional[EvaluateFn] = None,
                       num_devices: Optional[int] = None) -> TrainState:
  """Trains OASIS, resuming from the newest checkpoint in `workdir`.

  Writes `workdir/checkpoints/` (every config.train.checkpoint_every_steps and
  at the end), `workdir/tensorboard/` (losses every log_every_steps, sample
  grids) and `workdir/samples/<step>.png` (every sample_every_steps and at the
  end). SIGTERM or SIGINT: the current step ends, a checkpoint is written and
  the function returns.

  Args:
    config: the run configuration (configs/*.py).
    workdir: the run's folder.
    evaluate_fn: optional evaluation, `evaluate_fn(state, step) -> metrics`,
      called every config.eval.fid_every_steps (> 0) with the EMA statistics
      refreshed; its metrics go to TensorBoard under 'eval/', and when they
      hold config.eval.best_metric the best checkpoint
      (`workdir/checkpoint_best/`) is updated.
    num_devices: use the first this many devices (default: all).

  Returns:
    The final train state.

  Raises:
    ValueError: the global batch does not divide by the device count.
    FloatingPointError: a loss became NaN or infinite (naming the step).
  """
  config = config_lib.resolve(config)  # The platform's formulations.
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  is_chief = jax.process_index() == 0
  mesh = sharding.make_mesh(num_devices)
  sharding.check_batch_size(config.train.batch_size, mesh)
  logging.info('Mesh: %d devices (%s), %d process(es); global batch %d, %d '
               'per device.', mesh.devices.size, config_lib.platform(),
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
  state, restored = checkpointing.restore_or_init(
      manager, abstract_state, state_sharding,
      lambda: init_train_state(config, mesh, abstract_state), train_iter)
  state = _with_optimizers(state, abstract_state)
  host_memory.trim_heap()
  step = 0 if restored is None else int(restored)
  if restored is not None:
    logging.info('Resumed from the checkpoint of step %d.', step)

  num_steps = int(config.train.num_steps)
  p_train_step = make_train_step(config, mesh, state_sharding)
  # The base key (state.rng never changes); a copy, as the state is donated.
  rng = jax.jit(jnp.copy, out_shardings=sharding.replicated(mesh))(state.rng)
  writer = logging_utils.Writer(workdir / logging_utils.TENSORBOARD_DIR,
                                enabled=is_chief)
  sampler = _Sampler(config, mesh, state_sharding, workdir, writer, is_chief)
  refresh_fn = make_refresh_step(config, mesh)
  refreshed_at = {}

  def with_refreshed_ema(state, step):
    if state.ema is None:
      return state
    if step not in refreshed_at:
      refreshed_at.clear()
      refreshed_at[step] = refresh_ema(config, mesh, state.ema, step,
                                       refresh_fn=refresh_fn)
    return state.replace(ema=refreshed_at[step])

  train = config.train
  every = lambda k: k > 0 and step % k == 0
  pending = []  # (step, metrics on the device) since the last check.
  first_step, timer = step + 1, logging_utils.StepTimer(step)
  logging.info('Training from step %d to %d.', step, num_steps)
  try:
    with _StopRequest() as stop:
      while step < num_steps:
        batch = sharding.global_batch(next(train_iter), mesh)
        state, metrics = p_train_step(state, batch, rng)
        step += 1
        if step == first_step:  # Compiled now: time the steps that follow.
          timer = logging_utils.StepTimer(step)
          host_memory.trim_heap()  # The compiler's freed memory.
        pending.append((step, metrics))
        log_now = every(train.log_every_steps)
        stopping = stop.should_stop(sync=log_now)
        last = step == num_steps or stopping
        save_now = every(train.checkpoint_every_steps) or last
        if log_now or save_now:
          means = _check_finite(pending)
          pending = []
          if log_now or last:
            logging_utils.log_progress(step, num_steps, timer.rate(step),
                                       train.batch_size, means, writer)
            writer.flush()
        if save_now:
          checkpointing.save(manager, step, state, train_iter)
        if stopping:
          logging.warning('Stopped at step %d; checkpoint written.', step)
          break
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
  finally:
    manager.wait_until_finished()
    if best_manager is not None:
      best_manager.wait_until_finished()
    writer.close()
    _close(train_iter)
  logging.info('Done at step %d. Checkpoints: %s, samples: %s, TensorBoard: '
               'tensorboard --logdir %s', step, manager.directory,
               workdir / logging_utils.SAMPLES_DIR,
               workdir / logging_utils.TENSORBOARD_DIR)
  return state
