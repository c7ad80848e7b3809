"""Old vs new code on the same benchmark, alternating, in one run.

  git worktree add --detach ../oasis-old OLD_COMMIT
  python -m benchmarks.compare --old=../oasis-old --new=. --rounds=4 \
      --metric=s_per_iter -- benchmarks.train_step --config=configs/ade20k.py \
      --config.data.image_size=64 --config.train.batch_size=1 \
      --config.generator.channels=16 --warmup=1 --runs=3

Each round runs the benchmark module once in each tree, through that tree's
own `scripts/launch.sh` (its CPU start-up: huge-page malloc), in a fresh
process, with the tree first on PYTHONPATH and as the working directory;
the order alternates from round to round, so that a drift of the machine's
speed falls on both. The metric is read from the last line the benchmark
prints (one JSON object). Prints each round's values, the medians and
new / old, and as its last line one JSON object with them. Paths in the
benchmark's flags are relative to each tree.
"""

import json
import os
import statistics
import subprocess
import sys

from absl import app
from absl import flags

_OLD = flags.DEFINE_string('old', None, 'The old tree (a git worktree).')
_NEW = flags.DEFINE_string('new', '.', 'The new tree.')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Runs of each tree.')
_METRIC = flags.DEFINE_string('metric', 's_per_iter',
                              "The benchmark's JSON key to compare.")


def run_once(tree: str, argv: list[str], metric: str) -> float:
  """The metric of one run of `launch.sh argv` in tree."""
  tree = os.path.abspath(tree)
  env = dict(os.environ, PYTHONPATH=tree + os.pathsep + os.environ.get(
      'PYTHONPATH', ''), PYTHON=sys.executable)
  proc = subprocess.run([os.path.join(tree, 'scripts', 'launch.sh'), *argv],
                        cwd=tree, env=env, capture_output=True, text=True,
                        check=False)
  lines = proc.stdout.strip().splitlines()
  if proc.returncode or not lines:
    raise SystemExit(f'FATAL {tree}: {" ".join(argv)} exited with '
                     f'{proc.returncode}: {proc.stderr.strip()[-2000:]}')
  result = json.loads(lines[-1])
  if metric not in result:
    raise SystemExit(f'FATAL --metric={metric}: not in the benchmark\'s '
                     f'output keys {sorted(result)}.')
  return float(result[metric])


def main(argv):
  bench = argv[1:]
  if not bench:
    raise app.UsageError('Give the benchmark module and its flags after --.')
  values = {'old': [], 'new': []}
  trees = {'old': _OLD.value, 'new': _NEW.value}
  for r in range(_ROUNDS.value):
    order = ('old', 'new') if r % 2 == 0 else ('new', 'old')
    for name in order:
      values[name].append(run_once(trees[name], bench, _METRIC.value))
    print(f'round {r + 1}: old {values["old"][-1]:.4g}  '
          f'new {values["new"][-1]:.4g}', flush=True)
  medians = {k: statistics.median(v) for k, v in values.items()}
  ratio = medians['new'] / medians['old']
  print(f'median {_METRIC.value}: old {medians["old"]:.4g}  '
        f'new {medians["new"]:.4g}  new / old {ratio:.3f}')
  print(json.dumps({'benchmark': bench, 'metric': _METRIC.value,
                    'old': values['old'], 'new': values['new'],
                    'median_old': medians['old'],
                    'median_new': medians['new'], 'new_over_old': ratio}))


if __name__ == '__main__':
  flags.mark_flags_as_required(['old'])
  app.run(main)
