"""Benchmark of eval-mode generation (the EMA generator at inference).

  python benchmarks/inference.py --config=configs/ade20k.py \
      --config.data.image_size=64 --config.train.batch_size=1 \
      --config.generator.channels=16

The batch is config.train.batch_size label maps. Prints a table and, as its
last line, one JSON object with s_per_image, images_per_s, compile_s,
peak_rss_mib, flops_per_image and flop_per_s (of the direct convolutions: the
Winograd path does fewer, so flop_per_s is a direct-conv equivalent).
"""

import copy
import functools
import os
import sys

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # pylint: disable=g-import-not-at-top,wrong-import-position
from oasis_jax import config_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from oasis_jax import host_memory  # pylint: disable=g-import-not-at-top,wrong-import-position
from oasis_jax import sharding  # pylint: disable=g-import-not-at-top,wrong-import-position
from oasis_jax import steps  # pylint: disable=g-import-not-at-top,wrong-import-position
from oasis_jax import train_state  # pylint: disable=g-import-not-at-top,wrong-import-position

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Model config.',
                                          lock_config=True)
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed calls.')
_RUNS = flags.DEFINE_integer('runs', 7, 'Timed calls (median).')


def main(argv):
  del argv
  config = _CONFIG.value
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
  fn = jax.jit(functools.partial(steps.generate, config=config),
               out_shardings=data)
  compiled, compile_s, _ = common.compile_with_cost(fn, variables, label, z)
  # XLA's cost analysis counts a loop body once, and the Winograd bands are
  # a loop: count the FLOPs of the same generator with direct convolutions
  # (FLOP/s below are direct-conv equivalents).
  direct = copy.deepcopy(config)
  direct.perf.conv_impl = 'xla'
  flops = common.lowered_flops(
      jax.jit(functools.partial(steps.generate, config=direct)), variables,
      label, z)
  median, times = common.time_compiled(
      lambda: compiled(variables, label, z), _WARMUP.value, _RUNS.value)
  h, w = train_state.image_hw(config)
  result = {
      'benchmark': 'inference', 'image_hw': [h, w], 'batch_size': b,
      'generator_channels': config.generator.channels,
      'num_classes': config.data.num_classes,
      'compute_dtype': config.perf.compute_dtype,
      'devices': jax.device_count(), 'platform': config_lib.platform(),
      's_per_image': median / b, 's_per_batch': median,
      'images_per_s': b / median, 'compile_s': compile_s,
      'peak_rss_mib': common.peak_rss_mib(),
      'flops_per_image': flops / b if flops else None,
      'flop_per_s': flops / median if flops else None, 'runs_s': times,
  }
  common.print_table([(k, str(v)) for k, v in result.items()])
  common.print_json(result)


if __name__ == '__main__':
  host_memory.relaunch_with_huge_pages()  # As the entry points of oasis_jax.
  flags.mark_flags_as_required(['config'])
  app.run(main)
