"""Tests of the command line: overrides, config.json, SIGTERM and resume."""

import json
import os
import re
import signal
import subprocess
import sys
import threading

from absl.testing import absltest
from absl.testing import parameterized
from PIL import Image

from oasis_jax import checkpointing

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TIMEOUT_S = 300


def _command(workdir, *overrides):
  config = os.path.join(_REPO, 'configs', 'tiny.py')
  return [sys.executable, '-m', 'oasis_jax.main', f'--config={config}',
          f'--workdir={workdir}', *overrides]


def _env():
  # One device, so the tiny batch divides; the compilation cache is shared.
  return dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1',
              PYTHONPATH=_REPO)


def _run(workdir, *overrides, cwd=_REPO):
  return subprocess.run(_command(workdir, *overrides), cwd=cwd, env=_env(),
                        capture_output=True, text=True, check=False,
                        timeout=_TIMEOUT_S)


class MainTest(parameterized.TestCase):

  @parameterized.parameters(
      ('--config.train.batch_sze=3', 'batch_sze', 'batch_size'),
      ('--config.trian.num_steps=3', 'trian', 'train'))
  def test_mistyped_override_is_an_error_naming_the_key(self, flag, key,
                                                         suggestion):
    workdir = self.create_tempdir().full_path
    result = _run(workdir, flag)
    self.assertEqual(result.returncode, 1, result.stderr[-3000:])
    self.assertIn(f"{flag}: the config has no key '{key}'", result.stderr)
    self.assertIn(f'Did you mean "{suggestion}"', result.stderr)
    self.assertNotIn('Traceback', result.stderr)
    self.assertEmpty(os.listdir(workdir))

  def test_bad_data_is_a_one_line_error_naming_the_file(self):
    root = self.create_tempdir()
    image = root.create_file('images/train/a.png').full_path
    Image.new('RGB', (32, 32)).save(image)
    label = root.create_file('labels/train/b.png').full_path
    Image.new('L', (32, 32)).save(label)  # a.png has no label, b.png no image.
    workdir = os.path.join(root.full_path, 'run')
    result = _run(workdir, '--config.data.name=folder',
                  f'--config.data.root={root.full_path}')
    self.assertEqual(result.returncode, 1, result.stderr[-3000:])
    self.assertIn('FATAL bad data', result.stderr)
    self.assertIn('a.png', result.stderr)
    self.assertNotIn('Traceback', result.stderr)

  def test_sigterm_writes_checkpoint_of_stop_step_and_run_resumes(self):
    # A relative --workdir, as in the README (Orbax needs absolute paths).
    cwd = self.create_tempdir().full_path
    workdir = os.path.join(cwd, 'run')
    overrides = ['--config.train.num_steps=1000',
                 '--config.train.log_every_steps=1',
                 '--config.train.checkpoint_every_steps=1000',
                 '--config.train.sample_every_steps=1000']
    proc = subprocess.Popen(_command('run', *overrides), cwd=cwd,
                            env=_env(), stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    watchdog = threading.Timer(_TIMEOUT_S, proc.kill)
    watchdog.start()
    lines = []
    try:
      for line in proc.stderr:
        lines.append(line)
        if 'step 3/1000' in line:
          proc.send_signal(signal.SIGTERM)
      returncode = proc.wait()
    finally:
      watchdog.cancel()
    output = ''.join(lines)
    self.assertEqual(returncode, 0, output[-3000:])
    # The resolved config, the layout and config.json.
    self.assertIn('Configuration:', output)
    self.assertIn('num_steps: 1000', output)
    self.assertIn('process 0 of 1; 1 local / 1 global devices', output)
    with open(os.path.join(workdir, 'config.json')) as f:
      self.assertEqual(json.load(f)['train']['num_steps'], 1000)

    stopped = re.search(r'Stopped at step (\d+); checkpoint written', output)
    self.assertIsNotNone(stopped, output[-3000:])
    stop_step = int(stopped.group(1))
    self.assertGreaterEqual(stop_step, 3)
    self.assertLess(stop_step, 1000)
    manager = checkpointing.create_manager(workdir)
    self.assertEqual(manager.all_steps(), [stop_step])

    end = stop_step + 2
    result = _run('run', f'--config.train.num_steps={end}',
                  '--config.train.log_every_steps=1', cwd=cwd)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertIn(f'Resumed from the checkpoint of step {stop_step}.',
                  result.stderr)
    self.assertIn(f'step {stop_step + 1}/{end}', result.stderr)
    self.assertNotIn(f'step {stop_step}/{end}', result.stderr)
    manager.reload()
    self.assertEqual(manager.latest_step(), end)
    self.assertTrue(os.path.exists(
        os.path.join(workdir, 'samples', f'{end:08d}.png')))


if __name__ == '__main__':
  absltest.main()
