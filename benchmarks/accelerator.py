"""Measures this project on whatever accelerator it runs on, in one command.

  python -m benchmarks.accelerator             # about 8 minutes on one GPU
  python -m benchmarks.accelerator --tiny      # tiny sizes: a CPU smoke test

Training iterations (G step + D step with LabelMix + EMA, random inputs) at
256x256 with ADE20K's classes and the official widths (configs/ade20k.py) at
batch 8 and 32 in float32 and bfloat16; the formulation choices that matter
on the platform (`--variants`: perf.label_conv dense / gather_matmul, the
fused D forwards, donation, remat) at the first batch size; inference; the
training step's compile time cold and from the persistent cache (a second
process); peak memory (the device's own statistics; CPU: peak RSS); FLOPs with every
convolution counted (benchmarks/common.direct_conv_flops), FLOP/s and the
fraction of the chip's data-sheet peak; a `--main_steps` run of
`python -m oasis_jax.main` on the synthetic data, started twice (cold, then
from the compilation cache: benchmarks/startup.py); and the input pipeline's
images/s per CPU core for ADE20K-size JPEGs at 256x256
(benchmarks/fake_trees.py), with Grain's throughput at the automatic worker
count (benchmarks/input_pipeline.py).

Every measurement runs in a process of its own (its peak memory is its own,
and this process never claims the accelerator). Cases run in priority order
(`plan`) while they fit in `--budget_s`; the rest are listed as skipped. A part whose
modules are not installed (Grain, tensorboardX, Pillow, ml_collections) is
skipped with a note naming them. Prints one table and, last, one JSON line.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Optional, Sequence

from absl import app
from absl import flags
import jax

from benchmarks import accelerator_case
from oasis_jax.runtime import cpu_workers

_TINY = flags.DEFINE_bool(
    'tiny', False, 'Tiny sizes for a smoke test on a CPU (configs/tiny.py, '
    '32x32, batch 2, one timed run, 2-step main runs on configs/tiny.py, 2 '
    'pipeline files); --dtypes and --variants still apply.')
_CONFIG = flags.DEFINE_string('config', 'ade20k',
                              'Model config: the module configs.<name>.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 256, 'Image width.')
_BATCH_SIZES = flags.DEFINE_list('batch_sizes', ['8', '32'],
                                 'Training batch sizes.')
_DTYPES = flags.DEFINE_list(
    'dtypes', ['bfloat16', 'float32'],
    'perf.compute_dtype values; the first also gets the warm compile.')
_VARIANTS = flags.DEFINE_list(
    'variants', ['perf.label_conv=dense', 'perf.label_conv=gather_matmul',
                 'perf.fuse_d_forwards=False', 'donate=False',
                 'perf.remat=True'],
    'Formulations timed against the defaults at the first batch size in '
    '--variant_dtype: config KEY=VALUE, or donate=False.')
_VARIANT_DTYPE = flags.DEFINE_string('variant_dtype', 'bfloat16',
                                     'Compute dtype of the variant cases.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed iterations per case.')
_RUNS = flags.DEFINE_integer('runs', 8, 'Timed iterations per case (median).')
_BUDGET_S = flags.DEFINE_float(
    'budget_s', 360, 'Model cases that would end after this many seconds '
    '(judged by the longest case of their kind so far) are skipped; the main '
    'run and the pipeline check follow (about 100 s on a GPU host).')
_CASE_TIMEOUT_S = flags.DEFINE_float('case_timeout_s', 300,
                                     'A case process is stopped after this.')
_MAIN_STEPS = flags.DEFINE_integer(
    'main_steps', 50, 'Steps of each python -m oasis_jax.main run (0: none).')
_MAIN_CONFIG = flags.DEFINE_string('main_config', 'configs/synthetic.py',
                                   'Config of the oasis_jax.main runs.')
_PIPELINE_FILES = flags.DEFINE_integer(
    'pipeline_files', 24, 'Fake ADE20K pairs for the pipeline check (0: none).')
# The measurement of the official PyTorch code on one H200 (torch
# 2.11, 256x256, ADE20K classes, official widths): s/iter, inference img/s,
# peak GPU memory GiB. Compared with only at those sizes on an H200.
OFFICIAL_H200 = {
    ('train_step', 'float32', 8): {'s_per_iter': 0.253, 'memory_gib': 15.5},
    ('train_step', 'bfloat16', 8): {'s_per_iter': 0.264},  # torch.autocast
    ('train_step', 'float32', 32): {'s_per_iter': 0.819, 'memory_gib': 55.5},
    ('inference', 'float32', 8): {'images_per_s': 273},
    ('inference', 'bfloat16', 8): {'images_per_s': 303},  # torch.autocast
}
# What each part imports besides jax, flax, optax and orbax-checkpoint.
NEEDS = {
    'model': ('ml_collections',),
    'main': ('ml_collections', 'grain', 'tensorboardX', 'PIL'),
    'pipeline_per_core': ('ml_collections', 'PIL'),
    'pipeline_grain': ('ml_collections', 'PIL', 'grain'),
}


def importable(module: str) -> bool:
  """Whether `module` imports in a fresh interpreter (this one stays clean)."""
  return subprocess.run([sys.executable, '-c', f'import {module}'],
                        capture_output=True, check=False).returncode == 0


def _missing(part: str, available: dict[str, bool]) -> list[str]:
  return [m for m in NEEDS[part] if not available[m]]


def _spawn(case: dict, env: dict, timeout_s: float) -> dict:
  """Runs `case` in a child process; its result dict, or {'error': ...}."""
  command = [sys.executable, '-m', 'benchmarks.accelerator_case',
             json.dumps(case)]
  try:
    proc = subprocess.run(command, env=env, capture_output=True, text=True,
                          timeout=timeout_s, check=False)
  except subprocess.TimeoutExpired:
    return {'error': f'timed out after {timeout_s:.0f} s'}
  for line in proc.stdout.splitlines():
    if line.startswith(accelerator_case.MARK):
      return json.loads(line[len(accelerator_case.MARK):])
  tail = (proc.stderr.strip().splitlines() or ['no output'])[-1]
  return {'error': f'exit {proc.returncode}: {tail[:300]}'}


def _child_env(cache_dir: Optional[str]) -> dict:
  """The environment of a case process: cache off, or `cache_dir`."""
  env = dict(os.environ)
  env['JAX_COMPILATION_CACHE_DIR'] = cache_dir or ''
  env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env['PYTHONPATH'] = os.pathsep.join(
      [root] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
  return env


def plan(tiny: bool) -> list[dict]:
  """The model cases in priority order (run until the budget is spent)."""
  config = 'tiny' if tiny else _CONFIG.value
  size = 32 if tiny else _IMAGE_SIZE.value
  batches = [2] if tiny else [int(b) for b in _BATCH_SIZES.value]
  dtypes = _DTYPES.value
  warmup, runs = (1, 1) if tiny else (_WARMUP.value, _RUNS.value)
  variants = _VARIANTS.value

  def case(kind, batch, dtype, name, **extra):
    return {'name': name, 'kind': kind, 'config': config, 'image_size': size,
            'batch_size': batch, 'dtype': dtype, 'warmup': warmup,
            'runs': runs, **extra}

  first = batches[0]
  cases = [case('train', first, dtypes[0], f'train {dtypes[0]} b{first}',
                cache='cold'),
           case('train', first, dtypes[0], f'compile from cache {dtypes[0]} '
                f'b{first}', cache='warm', runs=0, warmup=0)]
  cases += [case('train', first, d, f'train {d} b{first}')
            for d in dtypes[1:]]
  cases += [case('inference', first, d, f'inference {d} b{first}')
            for d in dtypes]
  bigger = [case('train', b, d, f'train {d} b{b}')
            for b in batches[1:] for d in dtypes]
  formulations = []
  for variant in variants:
    key, value = variant.split('=', 1)
    extra = ({'donate': accelerator_case.parse_value(value)}
             if key == 'donate' else
             {'overrides': {key: accelerator_case.parse_value(value)}})
    formulations.append(case(
        'train', first, _VARIANT_DTYPE.value,
        f'train {_VARIANT_DTYPE.value} b{first} {variant}', variant=variant,
        **extra))
  # The first formulation (the label conv) before the bigger batches.
  return cases + formulations[:1] + bigger + formulations[1:]


def _official(result: dict, case: dict, tiny: bool) -> Optional[dict]:
  if tiny or 'H200' not in result.get('device_kind', '') or (
      case['config'] != 'ade20k' or case['image_size'] != 256 or
      case.get('variant')):
    return None
  return OFFICIAL_H200.get((result['benchmark'], case['dtype'],
                            case['batch_size']))


def run_main(steps: int, config: str, tiny: bool, available: dict,
             notes: list[str], timeout_s: float) -> Optional[dict]:
  """Two starts of python -m oasis_jax.main (benchmarks/startup.py)."""
  missing = _missing('main', available)
  if missing:
    notes.append(f'main run skipped: needs {", ".join(missing)}')
    return None
  command = [sys.executable, '-m', 'benchmarks.startup',
             f'--config={"configs/tiny.py" if tiny else config}',
             f'--steps={steps}']
  try:
    proc = subprocess.run(command, env=_child_env(None), capture_output=True,
                          text=True, timeout=timeout_s, check=False)
  except subprocess.TimeoutExpired:
    notes.append(f'main run stopped after {timeout_s:.0f} s')
    return None
  lines = proc.stdout.strip().splitlines()
  if proc.returncode or not lines:
    tail = (proc.stderr.strip().splitlines() or ['no output'])[-1]
    notes.append(f'main run failed: {tail[:300]}')
    return None
  return json.loads(lines[-1])


def run_pipeline(files: int, tiny: bool, available: dict, notes: list[str],
                 cpus: int, timeout_s: float) -> Optional[dict]:
  """Images/s per core (no Grain) and through Grain with auto workers."""
  missing = _missing('pipeline_per_core', available)
  if missing:
    notes.append(f'pipeline check skipped: needs {", ".join(missing)}')
    return None
  try:
    proc = subprocess.run(
        [sys.executable, '-m', 'benchmarks.fake_trees', f'--files={files}'],
        env=_child_env(None), capture_output=True, text=True,
        timeout=timeout_s, check=False)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
  except (subprocess.TimeoutExpired, IndexError, ValueError) as e:
    notes.append(f'pipeline check failed: {type(e).__name__}')
    return None
  result['cpus'] = cpus
  missing = _missing('pipeline_grain', available)
  if missing:
    notes.append(f'Grain pipeline throughput skipped: needs '
                 f'{", ".join(missing)}')
    return result
  workers = cpu_workers.auto_num_workers(cpus)
  batch = 2 if tiny else 8
  command = [sys.executable, '-m', 'benchmarks.input_pipeline',
             '--datasets=ade20k', f'--workers={workers}',
             f'--num_files={files}', f'--batch_size={batch}',
             '--runs=1',
             '--batches=1' if tiny else '--batches=16', '--warmup=1']
  try:
    proc = subprocess.run(command, env=_child_env(None), capture_output=True,
                          text=True, timeout=timeout_s, check=False)
    grain = json.loads(proc.stdout.strip().splitlines()[-1])['results'][0]
    result['grain'] = {k: grain[k] for k in ('workers', 'images_per_s',
                                             'warmup_s')}
  except (subprocess.TimeoutExpired, IndexError, ValueError, KeyError) as e:
    notes.append(f'Grain pipeline throughput failed: {type(e).__name__}')
  return result


def _fmt(value, scale=1.0, digits=3) -> str:
  return '-' if value is None else f'{value * scale:.{digits}g}'


def print_table(cases: list[dict]) -> None:
  """One row per case."""
  header = ('case', 's/iter', 'img/s', 'compile s', 'peak GiB', 'GFLOP/iter',
            'TFLOP/s', '% peak', 'vs official', 'note')
  rows = [header]
  for c in cases:
    r = c['result']
    per_call = r.get('s_per_iter', r.get('s_per_batch'))
    flops = r.get('flops_per_iter')
    if flops is None and r.get('flops_per_image') is not None:
      flops = r['flops_per_image'] * r['batch_size']
    memory = r.get('peak_memory_mib')
    official = c.get('official') or {}
    vs = ''
    if 's_per_iter' in official and r.get('s_per_iter'):
      vs = f'{official["s_per_iter"] / r["s_per_iter"]:.2f}x'
    elif 'images_per_s' in official and r.get('images_per_s'):
      vs = f'{r["images_per_s"] / official["images_per_s"]:.2f}x'
    rows.append((
        c['name'], _fmt(per_call), _fmt(r.get('images_per_s')),
        _fmt(r.get('compile_s')),
        '-' if memory is None else
        f'{memory / 1024:.3g} ({r.get("memory_source", "?")})',
        _fmt(flops, 1e-9), _fmt(r.get('flop_per_s'), 1e-12),
        _fmt(r.get('peak_fraction'), 100), vs, r.get('error', '')))
  widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
  for row in rows:
    print(' | '.join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())


def run_cases(tiny: bool, available: dict, notes: list[str],
              start: float) -> list[dict]:
  """Runs plan(tiny)'s cases, each in its own process, within --budget_s;
  each case gets its 'result' and the official figure it compares with."""
  missing = _missing('model', available)
  if missing:
    notes.append(f'model cases skipped: needs {", ".join(missing)} '
                 '(configs/*.py are ConfigDicts)')
    return []
  cases = []
  flops = {}  # (kind, batch, overrides) -> FLOPs of one call.
  took = {}  # kind -> the longest case of that kind so far (s).
  cache_dir = tempfile.mkdtemp(prefix='oasis_accel_jit_')
  for case in plan(tiny):
    elapsed = time.perf_counter() - start
    if elapsed + took.get(case['kind'], 0) > _BUDGET_S.value:
      notes.append(f'skipped (budget {_BUDGET_S.value:.0f} s): '
                   f'{case["name"]}')
      continue
    cache = cache_dir if case.get('cache') else None
    key = (case['kind'], case['batch_size'],
           json.dumps(case.get('overrides', {}), sort_keys=True))
    if key in flops:  # The same program in another dtype: same count.
      case['flops'] = flops[key]
    result = _spawn(case, _child_env(cache), _CASE_TIMEOUT_S.value)
    took[case['kind']] = max(took.get(case['kind'], 0),
                             time.perf_counter() - start - elapsed)
    counted = result.get('flops_per_iter') or (
        result.get('flops_per_image') or 0) * case['batch_size']
    if counted:
      flops.setdefault(key, counted)
    case['result'] = result
    case['official'] = _official(result, case, tiny)
    cases.append(case)
    print(f'[{time.perf_counter() - start:6.0f} s] {case["name"]}: '
          f'{result.get("s_per_iter", result.get("s_per_batch"))} s, '
          f'compile {result.get("compile_s")} s {result.get("error", "")}',
          flush=True)
  shutil.rmtree(cache_dir, ignore_errors=True)
  _compare_variants(cases)
  return cases


def _compare_variants(cases: list[dict]) -> None:
  """Each formulation's speed-up against the default at that size."""
  for case in cases:
    if case.get('variant') and case['result'].get('s_per_iter'):
      base = [c for c in cases if not c.get('variant') and
              c['kind'] == 'train' and c['dtype'] == case['dtype'] and
              c['batch_size'] == case['batch_size'] and
              c['result'].get('s_per_iter')]
      if base:
        case['speedup_vs_default'] = (base[0]['result']['s_per_iter'] /
                                      case['result']['s_per_iter'])


def print_report(cases: list[dict], main_run: Optional[dict],
                 pipeline: Optional[dict], notes: list[str]) -> None:
  """The table, the main run's and the pipeline's lines, the notes."""
  print()
  print_table(cases)
  if main_run:
    cold, warm = main_run['cold'], main_run['warm']
    print(f'oasis_jax.main ({main_run["steps"]} steps, {main_run["config"]}):'
          f' first step after {_fmt(cold["first_step_s"])} s cold, '
          f'{_fmt(warm["first_step_s"])} s from the cache; whole run '
          f'{cold["total_s"]:.1f} s')
  if pipeline:
    grain = pipeline.get('grain')
    print(f'input pipeline (ADE20K JPEG -> 256x256): '
          f'{pipeline["cpu_ms_per_image"]:.3g} CPU ms/image = '
          f'{pipeline["images_per_s_per_core"]:.3g} images/s per core'
          + (f'; Grain with {grain["workers"]} workers: '
             f'{grain["images_per_s"]} images/s' if grain else ''))
  for note in notes:
    print(f'note: {note}')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {list(argv[1:])}.')
  start = time.perf_counter()
  tiny = _TINY.value
  available = {m: importable(m) for m in
               sorted({m for ms in NEEDS.values() for m in ms})}
  notes = [f'{m} not installed' for m, ok in available.items() if not ok]
  cases = run_cases(tiny, available, notes, start)
  cpus = cpu_workers.usable_cpus()
  main_run = None
  if _MAIN_STEPS.value > 0:
    main_run = run_main(2 if tiny else _MAIN_STEPS.value, _MAIN_CONFIG.value,
                        tiny, available, notes, _CASE_TIMEOUT_S.value)
  pipeline = None
  if _PIPELINE_FILES.value > 0:
    pipeline = run_pipeline(2 if tiny else _PIPELINE_FILES.value, tiny,
                            available, notes, cpus, _CASE_TIMEOUT_S.value)
  first = next((c['result'] for c in cases if 'platform' in c['result']), {})
  compile_pair = [c['result'].get('compile_s') for c in cases
                  if c.get('cache')]
  summary = {
      'benchmark': 'accelerator', 'tiny': tiny,
      'platform': first.get('platform'), 'device_kind':
          first.get('device_kind'), 'devices': first.get('devices'),
      'jax': jax.__version__, 'python': sys.version.split()[0],
      'cpus': cpus, 'elapsed_s': time.perf_counter() - start,
      'compile_cold_s': compile_pair[0] if compile_pair else None,
      'compile_warm_s': compile_pair[1] if len(compile_pair) > 1 else None,
      'cases': [{k: v for k, v in c.items()
                 if k not in ('warmup', 'cache', 'flops')} for c in cases],
      # The formulations measured against the defaults (s/iter ratio > 1:
      # the variant is faster), for choosing the platform's perf defaults.
      'formulations': {c['variant']: c.get('speedup_vs_default')
                       for c in cases if c.get('variant')},
      'main_run': main_run, 'pipeline': pipeline, 'notes': notes,
  }
  print_report(cases, main_run, pipeline, notes)
  print(json.dumps(summary, sort_keys=True))


if __name__ == '__main__':
  app.run(main)
