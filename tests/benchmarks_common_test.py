"""Tests of the benchmarks' FLOP count, peak table and memory report."""

import functools

import jax
import jax.numpy as jnp

from data_pipelines import geometry
from benchmarks import common
from configs import tiny
from oasis_jax.training import steps
from oasis_jax.training import train_state


def _conv(x, w):
  return jax.lax.conv_general_dilated(
      x, w, (1, 1), 'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def test_lowered_count_includes_convolutions():
  x = jax.ShapeDtypeStruct((2, 10, 10, 8), jnp.float32)
  w = jax.ShapeDtypeStruct((3, 3, 8, 4), jnp.float32)
  # 2 * (2 images * 8 * 8 outputs * 4 channels) * (3 * 3 * 8) multiply-adds.
  assert common.lowered_flops(jax.jit(_conv), x, w) == 2 * 2 * 8 * 8 * 4 * 72


def test_direct_conv_count_agrees_with_the_compiled_cpu_count():
  # The count of the program before optimization equals XLA:CPU's count of
  # the same (reference) program compiled: no convolution is lost. The CPU
  # formulations do fewer multiply-adds (the upsampling convs in phases).
  config = tiny.get_config()
  state = jax.eval_shape(functools.partial(
      train_state.create_train_state, config), jax.random.PRNGKey(0))
  h, w = geometry.image_hw(config.data)
  b = config.train.batch_size
  batch = {'image': jax.ShapeDtypeStruct((b, h, w, 3), jnp.uint8),
           'label': jax.ShapeDtypeStruct((b, h, w), jnp.int32)}
  rng = jax.ShapeDtypeStruct((2,), jnp.uint32)

  def make_step(cfg):
    return jax.jit(functools.partial(steps.train_step, config=cfg))

  direct = common.direct_conv_flops(make_step, config, state, batch, rng)
  reference = config.copy_and_resolve_references()
  reference.perf.conv_impl = 'xla'
  _, _, compiled = common.compile_with_cost(make_step(reference), state,
                                            batch, rng)
  assert config.perf.conv_impl == 'auto'  # Not changed by the count.
  assert direct > 0 and compiled > 0
  assert abs(direct - compiled) / compiled < 0.1


def test_peak_table_matches_device_kinds():
  assert common.peak_flop_per_s('NVIDIA H200', 'bfloat16') == 989e12
  assert common.peak_flop_per_s('NVIDIA H100 PCIe', 'float32') == 378e12
  assert common.peak_flop_per_s('NVIDIA H100 80GB HBM3', 'float32') == 495e12
  assert common.peak_flop_per_s('TPU v5 lite', 'bfloat16') == 197e12
  assert common.peak_flop_per_s('TPU v5', 'bfloat16') == 459e12
  assert common.peak_flop_per_s('cpu', 'float32') is None


def test_peak_memory_on_cpu_is_the_resident_peak():
  memory = common.peak_memory()
  assert memory['memory_source'] == 'rss'
  assert memory['peak_memory_mib'] == memory['peak_rss_mib'] > 0
