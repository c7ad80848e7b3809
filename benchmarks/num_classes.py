"""Cost of the class count: one training iteration at 183 vs 1204 classes.

  python -m benchmarks.num_classes --config=configs/lvis.py \
      [--num_classes=183,1204] [--config.train.batch_size=32] [--memory_only]

Runs `benchmarks/train_step.py`'s iteration (G step, D step, EMA; random
images and label maps with ids drawn from all classes) once per class count,
each in its own process (so peak memories do not mix), everything else
equal. Per count: s_per_iter (median), the program's memory from XLA's
analysis (arguments + outputs + temporaries, MiB) and the process's peak
memory (the device's peak bytes in use on GPU/TPU, peak RSS on CPU). Prints
a table with the ratios to the first count and, as its last line, one JSON
object. --memory_only compiles without running (no timing).
"""

import functools
import json
import os
import subprocess
import sys

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from data_pipelines import geometry
from benchmarks import common
from oasis_jax.config import resolution
from oasis_jax.runtime import sharding
from oasis_jax.training import steps
from oasis_jax.training import train_state

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Model config.',
                                          lock_config=True)
_NUM_CLASSES = flags.DEFINE_list('num_classes', ['183', '1204'],
                                 'Class counts to compare (first = base).')
_SINGLE = flags.DEFINE_integer('single', 0, 'Internal: measure this class '
                               'count in this process.')
_MEMORY_ONLY = flags.DEFINE_bool('memory_only', False,
                                 'Compile and analyse only; no timing.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed iterations.')
_RUNS = flags.DEFINE_integer('runs', 5, 'Timed iterations (median).')

_MIB = 2**20


def _device_peak_mib():
  """Peak device bytes in use (GPU/TPU) in MiB, or None (CPU)."""
  stats = jax.devices()[0].memory_stats() or {}
  peak = stats.get('peak_bytes_in_use')
  return peak / _MIB if peak else None


def measure(config, memory_only: bool, warmup: int, runs: int) -> dict:
  """One iteration's time and memory for `config` (this process)."""
  mesh = sharding.make_mesh()
  repl, data = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  state = jax.jit(functools.partial(train_state.create_train_state, config),
                  out_shardings=repl)(jax.random.PRNGKey(config.seed))
  batch = jax.device_put(common.make_batch(config), data)
  step = jax.jit(functools.partial(steps.train_step, config=config),
                 in_shardings=(repl, data, repl), out_shardings=(repl, repl),
                 donate_argnums=0,
                 compiler_options=steps.compiler_options(config))
  rng = jax.device_put(jax.random.PRNGKey(1), repl)
  compiled, compile_s, flops = common.compile_with_cost(step, state, batch,
                                                        rng)
  analysis = compiled.memory_analysis()
  xla = {}
  if analysis is not None:
    xla = {
        'xla_temp_mib': analysis.temp_size_in_bytes / _MIB,
        'xla_total_mib': (analysis.argument_size_in_bytes +
                          analysis.output_size_in_bytes +
                          analysis.temp_size_in_bytes -
                          analysis.alias_size_in_bytes) / _MIB,
    }
  median = None
  if not memory_only:
    holder = {'state': state}

    def run():
      holder['state'], metrics = compiled(holder['state'], batch, rng)
      return metrics

    median, _ = common.time_compiled(run, warmup, runs)
  h, w = geometry.image_hw(config.data)
  peak = _device_peak_mib()
  return {'num_classes': int(config.data.num_classes), 'image_hw': [h, w],
          'batch_size': int(config.train.batch_size),
          'platform': resolution.platform(), 's_per_iter': median,
          'compile_s': compile_s, 'flops_per_iter': flops, **xla,
          'peak_mib': peak if peak is not None else common.peak_rss_mib(),
          'peak_kind': 'device' if peak is not None else 'host_rss'}


def _child_argv(count: int) -> list[str]:
  """This command line for one class count (the config overrides kept)."""
  keep = [a for a in sys.argv[1:] if not a.startswith(('--num_classes',
                                                       '--single'))]
  return [sys.executable, os.path.abspath(__file__), *keep,
          f'--single={count}', f'--config.data.num_classes={count}']


def compare(counts: list[int]) -> list[dict]:
  """Measures each count in a child process; returns their results."""
  results = []
  for count in counts:
    out = subprocess.run(_child_argv(count), check=True, text=True,
                         stdout=subprocess.PIPE).stdout
    results.append(json.loads(out.strip().splitlines()[-1]))
  return results


def main(argv):
  del argv
  if _SINGLE.value:
    common.print_json(measure(_CONFIG.value, _MEMORY_ONLY.value,
                              _WARMUP.value, _RUNS.value))
    return
  results = compare([int(c) for c in _NUM_CLASSES.value])
  base = results[0]
  keys = ('s_per_iter', 'xla_total_mib', 'xla_temp_mib', 'peak_mib')
  rows = [('num_classes', '  '.join(str(r['num_classes']) for r in results))]
  for key in keys:
    values = [r.get(key) for r in results]
    shown = '  '.join('-' if v is None else f'{v:.4g}' for v in values)
    ratios = '  '.join(
        '-' if not (v and base.get(key)) else f'{v / base[key]:.3f}x'
        for v in values)
    rows.append((key, f'{shown}   ({ratios})'))
  common.print_table(rows)
  common.print_json({'benchmark': 'num_classes', 'results': results})


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)
