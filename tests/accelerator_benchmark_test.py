"""Smoke tests of `python -m benchmarks.accelerator` at tiny sizes on a CPU."""

import json
import os
import subprocess
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*flags, blocked=(), tmp_path=None):
  """Runs the command; its JSON summary (last line) and whole stdout."""
  # One CPU device, so that the tiny batch of 2 divides over the devices.
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1'
             ' --xla_backend_optimization_level=0')
  path = [_ROOT]
  if blocked:
    for name in blocked:  # A package that fails to import, first on the path.
      package = tmp_path / 'blocked' / name
      package.mkdir(parents=True)
      (package / '__init__.py').write_text(
          f'raise ImportError("{name} blocked by the test")\n')
    path.insert(0, str(tmp_path / 'blocked'))
  env['PYTHONPATH'] = os.pathsep.join(path)
  proc = subprocess.run([sys.executable, '-m', 'benchmarks.accelerator',
                         '--tiny', '--case_timeout_s=1200', *flags],
                        cwd=_ROOT, env=env, capture_output=True, text=True,
                        timeout=3600,
                        check=True)
  return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stdout


def test_tiny_run_reports_flops_memory_compile_main_and_pipeline():
  summary, stdout = _run('--budget_s=1e9', '--dtypes=float32',
                         '--variant_dtype=float32',
                         '--variants=perf.label_conv=dense')
  assert summary['benchmark'] == 'accelerator'
  assert summary['platform'] == 'cpu'
  names = [c['name'] for c in summary['cases']]
  assert names == ['train float32 b2', 'compile from cache float32 b2',
                   'inference float32 b2',
                   'train float32 b2 perf.label_conv=dense']
  for case in summary['cases']:
    result = case['result']
    assert 'error' not in result, result
    assert result['peak_memory_mib'] > 0
    assert result['memory_source'] == 'rss'
    assert result['compile_s'] > 0
    if case['name'].startswith('compile'):
      continue
    flops = result.get('flops_per_iter') or result.get('flops_per_image')
    assert flops > 0 and result['flop_per_s'] > 0
    assert result['peak_fraction'] is None  # No peak known for a CPU.
  variant = summary['cases'][-1]
  assert variant['result']['perf']['label_conv'] == 'dense'
  assert variant['speedup_vs_default'] > 0
  assert summary['formulations'] == {
      'perf.label_conv=dense': variant['speedup_vs_default']}
  assert summary['compile_cold_s'] > 0 and summary['compile_warm_s'] > 0
  for start in ('cold', 'warm'):
    assert summary['main_run'][start]['returncode'] == 0
    assert summary['main_run'][start]['first_step_s'] > 0
  assert summary['main_run']['cache_entries'] > 0
  assert summary['pipeline']['images_per_s_per_core'] > 0
  assert summary['pipeline']['grain']['images_per_s'] > 0
  assert summary['notes'] == []
  assert 'train float32 b2 perf.label_conv=dense' in stdout  # The table.


def test_missing_grain_and_tensorboardx_skip_their_parts(tmp_path):
  summary, _ = _run('--budget_s=0', blocked=('grain', 'tensorboardX'),
                    tmp_path=tmp_path)
  notes = summary['notes']
  assert 'grain not installed' in notes
  assert 'main run skipped: needs grain, tensorboardX' in notes
  assert 'Grain pipeline throughput skipped: needs grain' in notes
  assert any(n.startswith('skipped (budget 0 s): train') for n in notes)
  assert summary['main_run'] is None and summary['cases'] == []
  assert summary['pipeline']['images_per_s_per_core'] > 0  # No Grain needed.


def test_missing_ml_collections_skips_the_model_cases(tmp_path):
  summary, _ = _run('--pipeline_files=0', '--main_steps=0',
                    blocked=('ml_collections',), tmp_path=tmp_path)
  assert summary['cases'] == []
  assert ('model cases skipped: needs ml_collections (configs/*.py are '
          'ConfigDicts)') in summary['notes']
