"""Tests of workdir_lock.py: one run per workdir, stale locks taken over."""

import json
import os
import signal
import socket
import subprocess
import sys

from absl.testing import absltest
from absl.testing import parameterized

from oasis_jax.runtime import workdir_lock

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Takes the lock, says so, then waits to be killed.
_HOLDER = """
import sys, time
from oasis_jax.runtime import workdir_lock
workdir_lock.WorkdirLock(sys.argv[1]).acquire()
print('held', flush=True)
time.sleep(300)
"""


class WorkdirLockTest(parameterized.TestCase):

  def test_lock_records_the_holder_and_is_deleted_on_release(self):
    workdir = os.path.join(self.create_tempdir().full_path, 'new')
    with workdir_lock.WorkdirLock(workdir) as lock:
      with open(lock.path) as f:
        holder = json.load(f)
      self.assertEqual(holder['host'], socket.gethostname())
      self.assertEqual(holder['pid'], os.getpid())
      self.assertRegex(holder['started'],
                       r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$')
    self.assertEqual(os.listdir(workdir), [])

  def test_second_lock_fails_naming_host_pid_and_start_time(self):
    workdir = self.create_tempdir().full_path
    with workdir_lock.WorkdirLock(workdir) as lock:
      with open(lock.path) as f:
        started = json.load(f)['started']
      with self.assertRaises(workdir_lock.WorkdirInUseError) as ctx:
        workdir_lock.WorkdirLock(workdir).acquire()
    self.assertEqual(
        str(ctx.exception),
        f'the workdir {workdir} is in use by another run (host '
        f'{socket.gethostname()}, pid {os.getpid()}, started {started}; '
        f'lock file {workdir}/.lock); stop that run first, or use another '
        '--workdir.')
    with workdir_lock.WorkdirLock(workdir):  # Free again once released.
      pass

  def test_lock_of_a_killed_run_is_taken_over_with_a_warning(self):
    workdir = self.create_tempdir().full_path
    holder = subprocess.Popen(
        [sys.executable, '-c', _HOLDER, workdir], cwd=_REPO,
        env=dict(os.environ, PYTHONPATH=_REPO), stdout=subprocess.PIPE,
        text=True)
    try:
      self.assertEqual(holder.stdout.readline().strip(), 'held')
      with self.assertRaisesRegex(workdir_lock.WorkdirInUseError,
                                  f'pid {holder.pid}, '):
        workdir_lock.WorkdirLock(workdir).acquire()
    finally:
      holder.send_signal(signal.SIGKILL)  # No chance to clean up.
      holder.wait()
      holder.stdout.close()
    self.assertTrue(os.path.exists(os.path.join(workdir, '.lock')))
    with self.assertLogs('absl', level='WARNING') as logs:
      with workdir_lock.WorkdirLock(workdir) as lock:
        with open(lock.path) as f:
          self.assertEqual(json.load(f)['pid'], os.getpid())
    self.assertLen(logs.output, 1)
    self.assertIn(f'Taking over {workdir}: the run that held it (host '
                  f'{socket.gethostname()}, pid {holder.pid}, started ',
                  logs.output[0])
    self.assertIn(') is gone.', logs.output[0])

  def test_workdir_that_is_not_a_local_path_is_not_locked(self):
    lock = workdir_lock.WorkdirLock('gs://bucket/run')
    with self.assertLogs('absl', level='INFO') as logs:
      with lock:
        pass
    self.assertIn('is not a local path', logs.output[0])


if __name__ == '__main__':
  absltest.main()
