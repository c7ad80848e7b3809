"""Tests of the command line: overrides, config.json, SIGTERM and resume."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading

from absl.testing import absltest
from absl.testing import parameterized
from PIL import Image

from configs import tiny
from oasis_jax.runtime import workdir_lock
from oasis_jax.training import checkpointing

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


def _fatal_lines(stderr):
  return [line for line in stderr.splitlines() if line.startswith('FATAL')]


def _workdir_with_config(root, config):
  workdir = os.path.join(root, 'run')
  os.makedirs(workdir)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  return workdir


def _read(path):
  with open(path) as f:
    return f.read()


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

  def test_changed_model_config_stops_naming_keys_and_keeps_config_json(
      self):
    workdir = _workdir_with_config(self.create_tempdir().full_path,
                                   tiny.get_config())
    before = _read(os.path.join(workdir, 'config.json'))
    result = _run(workdir, '--config.generator.channels=8',
                  '--config.train.num_steps=10')
    self.assertEqual(result.returncode, 1, result.stderr[-3000:])
    fatal = _fatal_lines(result.stderr)
    self.assertLen(fatal, 1, result.stderr[-3000:])
    self.assertIn('generator.channels: 2 -> 8', fatal[0])
    self.assertNotIn('num_steps', fatal[0])  # A safe change.
    self.assertNotIn('Traceback', result.stderr)
    self.assertEqual(_read(os.path.join(workdir, 'config.json')), before)
    self.assertEqual(os.listdir(workdir), ['config.json'])

  def test_bad_config_is_one_fatal_line_naming_each_key(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'run')
    result = _run(workdir, '--config.train.num_steps=-5',
                  '--config.train.batch_size=0',
                  '--config.train.checkpoint_every_steps=0')
    self.assertEqual(result.returncode, 1, result.stderr[-3000:])
    self.assertEqual(_fatal_lines(result.stderr), [
        'FATAL config.train.num_steps=-5: expected a positive integer; '
        'config.train.batch_size=0: expected a positive integer; '
        'config.train.checkpoint_every_steps=0: expected a positive integer '
        '(steps).'])
    self.assertNotIn('Traceback', result.stderr)
    self.assertFalse(os.path.exists(workdir))

  def test_workdir_that_is_a_file_is_one_fatal_line_traceback_if_verbose(
      self):
    path = self.create_tempdir().create_file('run').full_path
    result = _run(path)
    self.assertEqual(result.returncode, 1, result.stderr[-3000:])
    self.assertEqual(_fatal_lines(result.stderr),
                     [f'FATAL --workdir={path} is a file; a folder is '
                      'expected.'])
    self.assertNotIn('Traceback', result.stderr)
    verbose = _run(path, '--verbose')
    self.assertEqual(verbose.returncode, 1)
    self.assertIn('Traceback', verbose.stderr)
    self.assertLen(_fatal_lines(verbose.stderr), 1)

  def test_no_restorable_checkpoint_is_one_fatal_line(self):
    workdir = _workdir_with_config(self.create_tempdir().full_path,
                                   tiny.get_config())
    step_dir = os.path.join(workdir, 'checkpoints', '5')
    os.makedirs(os.path.join(step_dir, 'state'))
    with open(os.path.join(step_dir, 'state', 'manifest.ocdbt'), 'wb') as f:
      f.write(b'garbage')
    result = _run(workdir)
    self.assertEqual(result.returncode, 1, result.stderr[-3000:])
    fatal = _fatal_lines(result.stderr)
    self.assertLen(fatal, 1, result.stderr[-3000:])
    self.assertIn('no checkpoint in', fatal[0])
    self.assertIn(f'{workdir}/checkpoints_damaged', fatal[0])
    self.assertIn(f'{workdir}/checkpoints/5 is damaged (missing',
                  result.stderr)
    self.assertNotIn('Traceback', result.stderr)
    self.assertTrue(os.path.isdir(
        os.path.join(workdir, 'checkpoints_damaged', '5')))

  def test_second_run_on_a_workdir_in_use_stops_naming_the_holder(self):
    workdir = self.create_tempdir().full_path
    with workdir_lock.WorkdirLock(workdir) as lock:  # A run in progress.
      with open(lock.path) as f:
        started = json.load(f)['started']
      result = _run(workdir)
    self.assertEqual(result.returncode, 1, result.stderr[-3000:])
    self.assertEqual(_fatal_lines(result.stderr), [
        f'FATAL the workdir {workdir} is in use by another run (host '
        f'{socket.gethostname()}, pid {os.getpid()}, started {started}; lock '
        f'file {workdir}/.lock); stop that run first, or use another '
        '--workdir.'])
    self.assertNotIn('Traceback', result.stderr)
    self.assertEmpty(os.listdir(workdir))  # Nothing written by the second.

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
    lines, locked = [], None
    try:
      for line in proc.stderr:
        lines.append(line)
        if 'step 3/1000' in line:
          locked = os.path.exists(
              os.path.join(workdir, workdir_lock.LOCK_FILE))
          proc.send_signal(signal.SIGTERM)
      returncode = proc.wait()
    finally:
      watchdog.cancel()
    output = ''.join(lines)
    self.assertEqual(returncode, 0, output[-3000:])
    self.assertTrue(locked)  # The workdir was held while training.
    # The resolved config, the layout and config.json.
    self.assertIn('Configuration:', output)
    self.assertIn('num_steps: 1000', output)
    self.assertIn('process 0 of 1; 1 local / 1 global devices', output)
    with open(os.path.join(workdir, 'config.json')) as f:
      self.assertEqual(json.load(f)['train']['num_steps'], 1000)

    stopped = re.search(r'Stopped at step (\d+) on SIGTERM; checkpoint '
                        r'written', output)
    self.assertIsNotNone(stopped, output[-3000:])
    stop_step = int(stopped.group(1))
    self.assertGreaterEqual(stop_step, 3)
    self.assertLess(stop_step, 1000)
    # Steps that ended after the signal was received: at most the one in
    # flight (every step logs a progress line).
    after = output[output.index('Received SIGTERM'):]
    self.assertLessEqual(len(re.findall(r'step \d+/1000', after)), 1,
                         after)
    self.assertIn(f'step {stop_step}/1000', output)
    self.assertNotIn(f'step {stop_step + 1}/1000', output)
    manager = checkpointing.create_manager(workdir)
    self.assertEqual(manager.all_steps(), [stop_step])

    # SIGTERM during the start-up (the restore): a clean stop, nothing
    # written, the checkpoint untouched.
    proc = subprocess.Popen(_command('run', '--config.train.num_steps=2000'),
                            cwd=cwd, env=_env(), stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:
      lines.append(line)
      if 'Restoring the checkpoint' in line:
        proc.send_signal(signal.SIGTERM)
    self.assertEqual(proc.wait(timeout=_TIMEOUT_S), 0, ''.join(lines))
    startup = ''.join(lines)
    self.assertIn('before any step of this run; nothing written', startup)
    for bad in ('Traceback', 'Event loop is closed', 'FATAL'):
      self.assertNotIn(bad, startup)
    manager.reload()
    self.assertEqual(manager.all_steps(), [stop_step])
    with open(os.path.join(workdir, 'config.json')) as f:
      self.assertEqual(json.load(f)['train']['num_steps'], 1000)

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
    # config.json is the config of the run that started; the one before kept.
    with open(os.path.join(workdir, 'config.json')) as f:
      self.assertEqual(json.load(f)['train']['num_steps'], end)
    with open(os.path.join(workdir, 'config.previous.json')) as f:
      self.assertEqual(json.load(f)['train']['num_steps'], 1000)
    self.assertTrue(os.path.exists(
        os.path.join(workdir, 'samples', f'{end:08d}.png')))
    # The workdir is free again: the lock file went with the run.
    self.assertNotIn(workdir_lock.LOCK_FILE, os.listdir(workdir))


if __name__ == '__main__':
  absltest.main()
