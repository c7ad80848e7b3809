"""Start-up time of `python -m oasis_jax.main`, cold and from the cache.

  python -m benchmarks.startup [--config=configs/synthetic.py] [--steps=2]

Runs the same training command twice in a row, each in a fresh work folder,
with one fresh persistent compilation cache (XDG_CACHE_HOME in a temporary
folder, so the default 'auto' location): the first start compiles, the
second reads the compiled programs back. Reports the wall time from starting
the process to the first logged training step, and the run's whole time.
Prints a table and, last, one JSON line.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Mapping, Optional, Sequence

from absl import app
from absl import flags

_CONFIG = flags.DEFINE_string('config', 'configs/synthetic.py',
                              'Training config file.')
_STEPS = flags.DEFINE_integer('steps', 2, 'Training steps of each run.')
_OVERRIDES = flags.DEFINE_list('overrides', [],
                               'More --config.KEY=VALUE overrides.')
_TIMEOUT_S = flags.DEFINE_float('timeout_s', 1800,
                                'Each run is stopped after this.')

_FIRST_STEP = re.compile(r'step 1/\d+ ')


def main_command(config: str, workdir: str, steps: int,
                 overrides: Sequence[str] = ()) -> list[str]:
  """`python -m oasis_jax.main` logging every step, no samples, no FID."""
  return [sys.executable, '-m', 'oasis_jax.main', f'--config={config}',
          f'--workdir={workdir}', f'--config.train.num_steps={steps}',
          '--config.train.log_every_steps=1',
          f'--config.train.sample_every_steps={10 * steps}',
          f'--config.train.checkpoint_every_steps={10 * steps}',
          '--config.eval.fid_every_steps=-1',
          *[o if o.startswith('--') else f'--config.{o}' for o in overrides]]


def run_timed(command: Sequence[str], env: Mapping[str, str],
              timeout_s: float) -> dict:
  """Runs `command`; wall seconds to the 'step 1/N' log line and to the end.

  Returns:
    {'first_step_s', 'total_s', 'returncode', 'last_line'}; first_step_s is
    None when no step was logged.
  """
  start = time.perf_counter()
  first = None
  lines = []
  with subprocess.Popen(command, env=dict(env), stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True) as proc:
    try:
      for line in proc.stdout:
        lines.append(line.rstrip())
        if first is None and _FIRST_STEP.search(line):
          first = time.perf_counter() - start
        if time.perf_counter() - start > timeout_s:
          proc.kill()
      proc.wait()
    finally:
      if proc.poll() is None:
        proc.kill()
  return {'first_step_s': first, 'total_s': time.perf_counter() - start,
          'returncode': proc.returncode,
          'last_line': lines[-1] if lines else ''}


def cold_and_warm(config: str, steps: int, overrides: Sequence[str] = (),
                  timeout_s: float = 600,
                  env: Optional[Mapping[str, str]] = None) -> dict:
  """Two starts of the same training command sharing one fresh cache."""
  root = tempfile.mkdtemp(prefix='oasis_startup_')
  env = dict(os.environ if env is None else env)
  env.pop('JAX_COMPILATION_CACHE_DIR', None)  # The default location.
  env.pop('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', None)
  env['XDG_CACHE_HOME'] = os.path.join(root, 'xdg')
  try:
    runs = {}
    for name in ('cold', 'warm'):
      runs[name] = run_timed(
          main_command(config, os.path.join(root, name), steps, overrides),
          env, timeout_s)
    cache = os.path.join(root, 'xdg', 'oasis_jax', 'jax_compilation_cache')
    runs['cache_entries'] = (len(os.listdir(cache)) if os.path.isdir(cache)
                             else 0)
    return runs
  finally:
    shutil.rmtree(root, ignore_errors=True)


def main(argv):
  del argv
  runs = cold_and_warm(_CONFIG.value, _STEPS.value, _OVERRIDES.value,
                       _TIMEOUT_S.value)
  for name in ('cold', 'warm'):
    r = runs[name]
    print(f'{name:<5} first step {r["first_step_s"]} s, whole run '
          f'{r["total_s"]:.1f} s, exit {r["returncode"]}')
  print(json.dumps({'benchmark': 'startup', 'config': _CONFIG.value,
                    'steps': _STEPS.value, **runs}))


if __name__ == '__main__':
  app.run(main)
