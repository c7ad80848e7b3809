"""Tests of actions.py: the loss log's NaN check, the stop flag, intervals."""

import os
import signal

from absl.testing import absltest
from absl.testing import parameterized
import jax.numpy as jnp
import numpy as np

from configs import tiny
from oasis_jax.runtime import logging_utils
from oasis_jax.training import actions


class EveryTest(parameterized.TestCase):

  @parameterized.parameters((4, 2, True), (3, 2, False), (4, 0, False),
                            (4, -1, False))
  def test_every_acts_on_multiples_and_never_without_a_period(
      self, step, period, expected):
    self.assertEqual(actions.every(step, period), expected)


class _FakeCheckpoints:
  """What LossLog asks of Checkpoints: the save steps, the last save."""

  def __init__(self, save_every):
    self.saved, self.checks, self._every = None, 0, save_every

  def due(self, step):
    return step % self._every == 0

  def check(self):
    self.checks += 1


class LossLogTest(parameterized.TestCase):

  def _log(self, checkpoints, log_every_steps):
    config = tiny.get_config()  # num_steps 4.
    config.train.log_every_steps = log_every_steps
    return actions.LossLog(config, logging_utils.Writer(None, enabled=False),
                           checkpoints, start_step=0)

  def test_log_steps_print_the_mean_of_the_steps_since_the_last(self):
    checkpoints = _FakeCheckpoints(save_every=1000)
    log = self._log(checkpoints, log_every_steps=2)
    with self.assertLogs('absl', level='INFO') as logs:
      for step, value in ((1, 1.0), (2, 3.0)):
        log(step, None, {'g/adv': jnp.float32(value)})
    self.assertLen(logs.output, 1)
    self.assertIn('step 2/4', logs.output[0])
    self.assertRegex(logs.output[0], r'g/adv 2$')  # (1 + 3) / 2.
    self.assertEqual(checkpoints.checks, 1)  # Failed saves looked for.

  def test_nan_is_caught_at_a_save_step_that_is_not_a_log_step(self):
    checkpoints = _FakeCheckpoints(save_every=3)
    checkpoints.saved = 0
    log = self._log(checkpoints, log_every_steps=1000)
    with self.assertNoLogs('absl', level='INFO'):
      for step in (1, 2):
        log(step, None, {'g/adv': jnp.float32(1.0)})
    with self.assertRaisesRegex(FloatingPointError,
                                r'^Non-finite loss at step 3: .*the '
                                r'checkpoint of step 0 is kept\.$'):
      log(3, None, {'g/adv': jnp.float32(np.nan)})


class CheckFiniteTest(parameterized.TestCase):

  def test_message_says_when_no_checkpoint_is_kept(self):
    pending = [(1, {'g/adv': jnp.float32(1.0)}),
               (2, {'g/adv': jnp.float32(np.inf)})]
    with self.assertRaisesRegex(
        FloatingPointError, r"^Non-finite loss at step 2: \{'g/adv': inf\}\. "
        r'Stopped; no checkpoint was written before it\.$'):
      actions.check_finite(pending, None)



class StopRequestTest(parameterized.TestCase):

  @parameterized.parameters(signal.SIGTERM, signal.SIGINT)
  def test_signal_sets_the_flag_and_a_second_one_is_not_caught(self, sig):
    calls = []

    def before(signum, frame):
      del frame
      calls.append(signum)

    original = signal.signal(sig, before)
    try:
      with actions.StopRequest() as stop:
        self.assertFalse(stop.should_stop(sync=False))
        os.kill(os.getpid(), sig)
        self.assertTrue(stop.should_stop(sync=False))
        self.assertEqual(calls, [])
        os.kill(os.getpid(), sig)  # A second signal: the handler from before.
        self.assertEqual(calls, [sig])
      self.assertIs(signal.getsignal(sig), before)
    finally:
      signal.signal(sig, original)



if __name__ == '__main__':
  absltest.main()
