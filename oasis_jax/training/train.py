"""The OASIS training loop: jitted steps on a device mesh, checkpoints, samples.

`train_and_evaluate(config, workdir)` trains for `config.train.num_steps`
steps, resuming from the newest checkpoint in `workdir/checkpoints`. The train
state is replicated and the batch is split over the mesh's 'data' axis; the
same code runs on one device, on several, and on several processes (each
feeding its share of the global batch). After each step the loop calls the
periodic actions of actions.py in turn (the loss log with its NaN check,
checkpoints, samples, evaluation); a stop request ends it after the step in
flight, and the end of the run, reached or requested, checks, logs and saves
through the same calls.

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
from typing import Any, Callable, Optional

from absl import logging
from etils import epath
import jax
import jax.numpy as jnp

from oasis_jax.config import resolution
from oasis_jax.pretrained import vgg_weights
from oasis_jax.runtime import host_memory
from oasis_jax.runtime import logging_utils
from oasis_jax.runtime import sharding
from oasis_jax.training import actions
from oasis_jax.training import input_pipeline
from oasis_jax.training import steps
from oasis_jax.training import train_state as train_state_lib


def init_train_state(config,
                     mesh: jax.sharding.Mesh) -> train_state_lib.TrainState:
  """A fresh train state from config.seed, replicated over the mesh.

  Computed on one local device and then copied to every device of the mesh
  (through the host, which also makes it global on several processes): the
  compiled init does not depend on the mesh, so its compilation is cached
  across device counts. On a CPU it is compiled without LLVM optimizations,
  which halves the compile time of this run-once program.
  """
  rng = jax.random.PRNGKey(config.seed)
  init = jax.jit(functools.partial(train_state_lib.create_train_state,
                                   config)).lower(rng)
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
    return jit(functools.partial(steps.train_step, config=config),
               in_shardings=in_shardings)
  vgg_params = sharding.put_replicated(vgg[0], mesh)
  p_step = jit(lambda state, batch, rng, vgg_params: steps.train_step(
      state, batch, rng, config=config, vgg_params=vgg_params),
               in_shardings=in_shardings + (sharding.replicated(mesh),))
  return lambda state, batch, rng: p_step(state, batch, rng, vgg_params)


def train_and_evaluate(config, workdir, *,
                       evaluate_fn: Optional[actions.EvaluateFn] = None,
                       num_devices: Optional[int] = None,
                       stop_request: Optional[actions.StopRequest] = None,
                       on_started: Optional[Callable[[], None]] = None
                       ) -> train_state_lib.TrainState:
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
  workdir = epath.Path(workdir)
  with contextlib.ExitStack() as stack:
    stop = (stop_request if stop_request is not None else
            stack.enter_context(actions.StopRequest()))
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = _make_mesh(config, num_devices)
    abstract_state = train_state_lib.abstract_train_state(config)
    state_sharding = sharding.state_sharding(mesh, abstract_state)
    train_iter = input_pipeline.create_train_iterator(
        config, seed=config.seed, process_index=jax.process_index(),
        process_count=jax.process_count())
    stack.callback(input_pipeline.close_iterator, train_iter)
    checkpoints = stack.enter_context(
        actions.Checkpoints(config, workdir, train_iter))
    state, start = checkpoints.restore(
        abstract_state, state_sharding,
        functools.partial(init_train_state, config, mesh))
    host_memory.trim_heap()
    step_fn = _make_step_fn(config, mesh, state_sharding, train_iter,
                            state.rng)
    writer = stack.enter_context(contextlib.closing(logging_utils.Writer(
        workdir / logging_utils.TENSORBOARD_DIR,
        enabled=jax.process_index() == 0)))
    losses = actions.LossLog(config, writer, checkpoints, start)
    periodic = [losses, checkpoints, *_output_actions(
        config, workdir, mesh, state_sharding, writer, evaluate_fn, stack)]
    state, step = _loop(state, start, config.train, step_fn, periodic, stop,
                        on_started)
    # The end, or a stop: the steps since the last check are checked and
    # logged, and the last one saved (the same calls as at a save step).
    losses.flush(step)
    checkpoints.save(step, state)
    checkpoints.finish()
    _log_end(workdir, checkpoints.directory, step, start, config.train, stop)
  return state


def _make_mesh(config, num_devices: Optional[int]) -> jax.sharding.Mesh:
  """The training mesh, its batch split checked and logged."""
  mesh = sharding.make_mesh(num_devices)
  sharding.check_batch_size(config.train.batch_size, mesh)
  logging.info('Mesh: %d devices (%s), %d process(es); global batch %d, %d '
               'per device.', mesh.devices.size, resolution.platform(),
               jax.process_count(), config.train.batch_size,
               config.train.batch_size // mesh.devices.size)
  return mesh


def _make_step_fn(config, mesh: jax.sharding.Mesh, state_sharding: Any,
                  train_iter, rng: jax.Array):
  """step_fn(state) -> (state, metrics): one train step on the next batch."""
  p_train_step = make_train_step(config, mesh, state_sharding)
  # The base key (state.rng never changes); a copy, as the state is donated.
  rng = jax.jit(jnp.copy, out_shardings=sharding.replicated(mesh))(rng)

  def step_fn(state):
    batch = sharding.global_batch(next(train_iter), mesh)
    return p_train_step(state, batch, rng)

  return step_fn


def _output_actions(config, workdir: epath.Path, mesh: jax.sharding.Mesh,
                    state_sharding: Any, writer: logging_utils.Writer,
                    evaluate_fn: Optional[actions.EvaluateFn],
                    stack: contextlib.ExitStack) -> list[Any]:
  """The sampler and (with evaluate_fn) the evaluator, sharing one refresh."""
  ema = actions.RefreshedEma(config, mesh)
  outputs = [actions.Sampler(config, mesh, state_sharding, workdir, writer,
                             ema)]
  if evaluate_fn is not None:
    outputs.append(stack.enter_context(
        actions.Evaluator(config, workdir, evaluate_fn, writer, ema)))
  return outputs


def _loop(state, step: int, train_config, step_fn, periodic: list[Any],
          stop: actions.StopRequest,
          on_started: Optional[Callable[[], None]]) -> tuple[Any, int]:
  """Trains to train.num_steps or a stop request; returns (state, step).

  At most one step is in flight: the stop flag is read once the step before
  is done and before the next is dispatched (its batch drawn). With several
  processes the flag is agreed on before the first step and at log steps.
  """
  start, num_steps = step, int(train_config.num_steps)
  logging.info('Training from step %d to %d.', step, num_steps)
  while step < num_steps and not stop.should_stop(
      sync=step == start or actions.every(step,
                                          train_config.log_every_steps)):
    if step == start and on_started is not None:
      on_started()
    state, metrics = step_fn(state)
    step += 1
    if step == start + 1:  # Compiled now: the compiler's freed memory.
      host_memory.trim_heap()
    for action in periodic:
      action(step, state, metrics)
    jax.block_until_ready(metrics)
  return state, step


def _log_end(workdir: epath.Path, checkpoint_dir: epath.Path, step: int,
             start: int, train_config, stop: actions.StopRequest) -> None:
  """The last lines: why the run ended and where its outputs are."""
  signal_name = stop.signal_name or 'a signal'
  if step < train_config.num_steps and step > start:
    logging.warning('Stopped at step %d on %s; checkpoint written. Run again '
                    'to continue.', step, signal_name)
  elif step < train_config.num_steps:
    logging.warning('Stopped at step %d on %s before any step of this run; '
                    'nothing written.', step, signal_name)
  logging.info('Done at step %d. Checkpoints: %s, samples: %s, TensorBoard: '
               'tensorboard --logdir %s', step, checkpoint_dir,
               workdir / logging_utils.SAMPLES_DIR,
               workdir / logging_utils.TENSORBOARD_DIR)
