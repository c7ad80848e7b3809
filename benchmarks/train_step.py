"""Benchmark of one OASIS training iteration (G step, D step, EMA).

  python benchmarks/train_step.py --config=configs/ade20k.py \
      --config.data.image_size=64 --config.train.batch_size=1 \
      --config.generator.channels=16

Prints a table and, as its last line, one JSON object with s_per_iter,
images_per_s, compile_s, peak_rss_mib, flops_per_iter and flop_per_s.
Synthetic inputs (random image, random label map): no data set needed.
"""

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
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed iterations.')
_RUNS = flags.DEFINE_integer('runs', 5, 'Timed iterations (median).')


def main(argv):
  del argv
  config = _CONFIG.value
  mesh = sharding.make_mesh()
  repl, data = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  state = jax.jit(functools.partial(train_state.create_train_state, config),
                  out_shardings=repl)(jax.random.PRNGKey(config.seed))
  batch = jax.device_put(common.make_batch(config), data)
  step = jax.jit(functools.partial(steps.train_step, config=config),
                 in_shardings=(repl, data, repl), out_shardings=(repl, repl),
                 donate_argnums=0,
                 compiler_options=steps.compiler_options(config))
  rng = jax.device_put(jax.random.PRNGKey(1), repl)  # Not donated.
  compiled, compile_s, flops = common.compile_with_cost(step, state, batch,
                                                        rng)
  host_memory.trim_heap()  # As train.py does after compiling.
  holder = {'state': state}

  def run():
    holder['state'], metrics = compiled(holder['state'], batch, rng)
    return metrics

  median, times = common.time_compiled(run, _WARMUP.value, _RUNS.value)
  b = config.train.batch_size
  h, w = train_state.image_hw(config)
  result = {
      'benchmark': 'train_step', 'image_hw': [h, w], 'batch_size': b,
      'generator_channels': config.generator.channels,
      'num_classes': config.data.num_classes,
      'compute_dtype': config.perf.compute_dtype, 'remat': config.perf.remat,
      'devices': jax.device_count(), 'platform': config_lib.platform(),
      's_per_iter': median, 'images_per_s': b / median,
      'compile_s': compile_s, 'peak_rss_mib': common.peak_rss_mib(),
      'flops_per_iter': flops,
      'flop_per_s': flops / median if flops else None,
      'runs_s': times,
  }
  common.print_table([(k, str(v)) for k, v in result.items()])
  common.print_json(result)


if __name__ == '__main__':
  host_memory.relaunch_with_huge_pages()  # As the entry points of oasis_jax.
  flags.mark_flags_as_required(['config'])
  app.run(main)
