"""Tests of the FATAL line of the command-line tools."""

import errno
import glob
import io
import os
import sys

from absl import app
from absl.testing import absltest
from absl.testing import flagsaver
from absl.testing import parameterized
import numpy as np
import orbax.checkpoint as ocp

from oasis_jax.runtime import fatal


def _failing(error):
  def main(argv):
    del argv
    raise error
  return main


class GuardTest(parameterized.TestCase):

  def _run(self, main):
    stderr = io.StringIO()
    with absltest.mock.patch.object(sys, 'stderr', stderr):
      with self.assertRaises(SystemExit) as ctx:
        fatal.guard(main)(['prog'])
    return ctx.exception.code, stderr.getvalue()

  @parameterized.parameters(
      (ValueError('config.train.num_steps=-5: expected a positive integer.'),
       'FATAL config.train.num_steps=-5: expected a positive integer.'),
      (OSError(errno.ENOSPC, 'No space left on device'),
       'FATAL [Errno 28] No space left on device'),
      (FloatingPointError('Non-finite loss at step 4: {...}.\nStopped.'),
       'FATAL Non-finite loss at step 4: {...}. Stopped.'),
      (fatal.Error('no checkpoint restores'),
       'FATAL no checkpoint restores'),
  )
  def test_expected_error_is_one_fatal_line_and_exit_1(self, error, line):
    code, stderr = self._run(_failing(error))
    self.assertEqual(code, fatal.EXIT_FAILURE)
    self.assertEqual(stderr, line + '\n')

  def test_verbose_adds_the_traceback(self):
    with flagsaver.flagsaver(verbose=True):
      code, stderr = self._run(_failing(ValueError('bad')))
    self.assertEqual(code, 1)
    self.assertIn('Traceback', stderr)
    self.assertTrue(stderr.endswith('FATAL bad\n'))

  def test_uncaught_ctrl_c_is_one_line_and_exit_130(self):
    code, stderr = self._run(_failing(KeyboardInterrupt()))
    self.assertEqual(code, 130)
    self.assertEqual(stderr, 'FATAL interrupted\n')

  def test_error_inside_orbax_is_one_fatal_line(self):
    path = os.path.join(self.create_tempdir().full_path, 'ckpt')
    values = np.random.default_rng(0).random(1000)  # Incompressible.
    ocp.PyTreeCheckpointer().save(path, {'w': values})
    data = max(glob.glob(os.path.join(path, '**', 'd', '*'), recursive=True),
               key=os.path.getsize)
    with open(data, 'r+b') as f:  # The truncated array file.
      f.truncate(os.path.getsize(data) // 2)

    def main(argv):
      del argv
      ocp.PyTreeCheckpointer().restore(path)

    code, stderr = self._run(main)
    self.assertEqual(code, 1)
    self.assertTrue(stderr.startswith('FATAL '), stderr)
    self.assertIn('ckpt', stderr)
    self.assertEqual(stderr.count('\n'), 1, stderr)
    self.assertLessEqual(len(stderr), 700)

  def test_any_error_raised_inside_orbax_is_a_checkpoint_error(self):
    fake = os.path.join(os.sep, 'site-packages', 'orbax', 'handler.py')

    def main(argv):
      del argv
      code = compile('raise Exception("bad chunk")', fake, 'exec')
      exec(code)  # pylint: disable=exec-used

    code, stderr = self._run(main)
    self.assertEqual((code, stderr), (1, 'FATAL checkpoint: bad chunk\n'))

  def test_unexpected_error_keeps_its_traceback(self):
    with self.assertRaises(ZeroDivisionError):
      fatal.guard(_failing(ZeroDivisionError('bug')))(['prog'])

  def test_usage_error_goes_to_absl(self):
    with self.assertRaises(app.UsageError):
      fatal.guard(_failing(app.UsageError('--out is required')))(['prog'])

  def test_success_returns_mains_value(self):
    self.assertEqual(fatal.guard(lambda argv: 3)(['prog']), 3)


if __name__ == '__main__':
  absltest.main()
