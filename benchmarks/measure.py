"""One training iteration or one inference batch, measured on random inputs.

Shared by benchmarks/train_step.py, benchmarks/inference.py and
benchmarks/accelerator.py. Only jax, flax, optax and the model's modules are
imported (no Grain, TFDS or tensorboardX).
"""

import contextlib
import functools
from typing import Optional

import jax

from data_pipelines import geometry
from benchmarks import common
from oasis_jax.config import resolution
from oasis_jax.runtime import host_memory
from oasis_jax.runtime import sharding
from oasis_jax.training import steps
from oasis_jax.training import train_state
from oasis_jax.pretrained import vgg_weights


def _rates(result: dict, flops, seconds: float, dtype: str) -> dict:
  """Adds flop_per_s and peak_fraction (of all devices' dense peak)."""
  kind = jax.devices()[0].device_kind
  peak = common.peak_flop_per_s(kind, dtype)
  rate = flops / seconds if flops else None
  result.update({
      'device_kind': kind, 'flop_per_s': rate,
      'peak_flop_per_s': peak * jax.device_count() if peak else None,
      'peak_fraction': rate / (peak * jax.device_count())
                       if rate and peak else None,
  })
  return result


def train(config, warmup: int, runs: int, donate: bool = True,
          trace_dir: Optional[str] = None,
          flops: Optional[float] = None) -> dict:
  """Times the jitted training step (G step, D step with LabelMix, EMA).

  Args:
    config: the run configuration (batch: config.train.batch_size).
    warmup: untimed iterations.
    runs: timed iterations (median); 0 compiles only.
    donate: donate the state to the step (as train.py does).
    trace_dir: if set, the timed iterations are recorded there with
      jax.profiler.trace (TensorBoard's profile plugin or xprof reads it).
    flops: the step's FLOPs if already counted (the same program in another
      dtype: the count does not depend on it); None: counted here.

  Returns:
    A dict of s_per_iter, images_per_s, compile_s, flops_per_iter (direct
    convolutions, see common.direct_conv_flops), flop_per_s, peak_fraction,
    peak memory (common.peak_memory), runs_s and the case's settings.
  """
  mesh = sharding.make_mesh()
  repl, data = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  state = jax.jit(functools.partial(train_state.create_train_state, config),
                  out_shardings=repl)(jax.random.PRNGKey(config.seed))
  batch = jax.device_put(common.make_batch(config), data)
  rng = jax.device_put(jax.random.PRNGKey(1), repl)  # Not donated.
  use_vgg = bool(config.loss.use_vgg)
  vgg = None
  if use_vgg:  # The frozen VGG-19; random weights of its shapes if no file.
    vgg = (vgg_weights.load_for_config(config)[0] if config.loss.vgg_weights
           else vgg_weights.state_dict_to_params(
               vgg_weights.random_state_dict())[0])
    vgg = jax.device_put(vgg, repl)

  def make_step(cfg):
    def step(s, b, r, v):
      return steps.train_step(s, b, r, config=cfg, vgg_params=v)
    return jax.jit(step, in_shardings=(repl, data, repl, repl),
                   out_shardings=(repl, repl),
                   donate_argnums=0 if donate else (),
                   compiler_options=steps.compiler_options(cfg))

  compiled, compile_s, compiled_flops = common.compile_with_cost(
      make_step(config), state, batch, rng, vgg)
  if flops is None:
    flops = common.direct_conv_flops(make_step, config, state, batch, rng,
                                     vgg)
  host_memory.trim_heap()  # As train.py does after compiling.
  holder = {'state': state}

  def run():
    holder['state'], metrics = compiled(holder['state'], batch, rng, vgg)
    return metrics

  median, times = None, []
  if runs:
    with (jax.profiler.trace(trace_dir) if trace_dir
          else contextlib.nullcontext()):
      median, times = common.time_compiled(run, warmup, runs)
  b = config.train.batch_size
  result = {
      'benchmark': 'train_step',
      'image_hw': list(geometry.image_hw(config.data)), 'batch_size': b,
      'generator_channels': config.generator.channels,
      'num_classes': config.data.num_classes,
      'compute_dtype': config.perf.compute_dtype,
      'discriminator': config.discriminator.kind,
      'vgg_loss': use_vgg,
      'perf': config.perf.to_dict(), 'donate': donate,
      'devices': jax.device_count(), 'platform': resolution.platform(),
      's_per_iter': median, 'images_per_s': b / median if median else None,
      'compile_s': compile_s, 'flops_per_iter': flops,
      'compiled_flops_per_iter': compiled_flops, 'runs_s': times,
      **common.peak_memory(),
  }
  return _rates(result, flops if median else None, median or 1.0,
                config.perf.compute_dtype)


def inference(config, warmup: int, runs: int,
              flops: Optional[float] = None) -> dict:
  """Times eval-mode generation of config.train.batch_size label maps.

  `flops`: of one call if already counted (see `train`); None: counted here.

  Returns:
    A dict of s_per_image, s_per_batch, images_per_s, compile_s,
    flops_per_image (direct convolutions), flop_per_s, peak_fraction, peak
    memory, runs_s and the case's settings.
  """
  mesh = sharding.make_mesh()
  repl, data = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  (g_params, g_stats), _ = jax.jit(
      functools.partial(train_state.init_variables, config),
      out_shardings=repl)(jax.random.PRNGKey(config.seed))
  variables = {'params': g_params, 'batch_stats': g_stats}
  label = jax.device_put(common.make_batch(config)['label'], data)
  b = label.shape[0]
  z = steps.draw_noise(jax.random.PRNGKey(1), b, config)
  if z is not None:
    z = jax.device_put(z, data)

  def make_fn(cfg):
    return jax.jit(functools.partial(steps.generate, config=cfg),
                   out_shardings=data)

  compiled, compile_s, _ = common.compile_with_cost(make_fn(config),
                                                    variables, label, z)
  if flops is None:
    flops = common.direct_conv_flops(make_fn, config, variables, label, z)
  median, times = common.time_compiled(
      lambda: compiled(variables, label, z), warmup, max(runs, 1))
  result = {
      'benchmark': 'inference',
      'image_hw': list(geometry.image_hw(config.data)), 'batch_size': b,
      'generator_channels': config.generator.channels,
      'num_classes': config.data.num_classes,
      'compute_dtype': config.perf.compute_dtype, 'perf': config.perf.to_dict(),
      'devices': jax.device_count(), 'platform': resolution.platform(),
      's_per_image': median / b, 's_per_batch': median,
      'images_per_s': b / median, 'compile_s': compile_s,
      'flops_per_image': flops / b if flops else None, 'runs_s': times,
      **common.peak_memory(),
  }
  return _rates(result, flops, median, config.perf.compute_dtype)

