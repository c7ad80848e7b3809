"""Tests of the training loop: artifacts, exact resume, devices, NaN stop."""

import errno
import glob
import os
import shutil
import signal

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint._src.path import atomicity
import pytest
from tensorboard.backend.event_processing import event_accumulator

from configs import tiny
from oasis_jax.training import actions
from oasis_jax.training import checkpointing
from oasis_jax.training import input_pipeline
from oasis_jax.runtime import sharding
from oasis_jax.training import train
from oasis_jax.training import train_state


def _config(**train_overrides):
  config = tiny.get_config()
  for key, value in train_overrides.items():
    setattr(config.train, key, value)
  return config


class _RecordingEvaluation:
  """evaluate_fn: records the steps and EMA statistics it sees; fake FIDs."""

  FID = {2: 5.0, 4: 7.0}

  def __init__(self):
    self.steps, self.ema_stats = [], {}

  def __call__(self, state, step):
    self.steps.append(step)
    self.ema_stats[step] = jax.device_get(state.ema['batch_stats'])
    return {'fid': self.FID[step]}


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """A straight 4-step run, and 2 steps + stop + 2 more (with evaluation)."""
  root = tmp_path_factory.mktemp('runs')
  straight = train.train_and_evaluate(
      _config(num_steps=4), root / 'straight', num_devices=1)
  evaluation = _RecordingEvaluation()
  config = _config(num_steps=2)
  config.eval.fid_every_steps = 2
  first = train.train_and_evaluate(config, root / 'split',
                                   evaluate_fn=evaluation, num_devices=1)
  first_steps = list(evaluation.steps)
  config.train.num_steps = 4
  resumed = train.train_and_evaluate(config, root / 'split',
                                     evaluate_fn=evaluation, num_devices=1)
  return dict(root=root, straight=jax.device_get(straight),
              first_step=int(first.step), first_eval_steps=first_steps,
              resumed=jax.device_get(resumed), evaluation=evaluation)


def _leaves_equal(a, b) -> bool:
  return all(np.array_equal(x, y) for x, y in
             zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


class TrainAndEvaluateTest(parameterized.TestCase):

  @pytest.fixture(autouse=True)
  def _runs(self, runs):
    self.runs = runs

  def test_train_and_evaluate_writes_checkpoints_samples_and_events(self):
    workdir = self.runs['root'] / 'split'
    # keep_checkpoints=2 of the saves at steps 2 and 4.
    self.assertEqual(ocp.CheckpointManager(
        workdir / checkpointing.CHECKPOINT_DIR).all_steps(), [2, 4])
    for step in (2, 4):
      self.assertTrue((workdir / 'checkpoints' / str(step) / 'data_iter' /
                       'process_0-of-1.json').exists())
    samples = sorted(p.name for p in (workdir / 'samples').iterdir())
    self.assertEqual(samples, ['00000002.png', '00000004.png'])
    events = event_accumulator.EventAccumulator(
        str(workdir / 'tensorboard'), size_guidance={'images': 0})
    events.Reload()
    self.assertEqual([e.step for e in events.Scalars('g/adv')], [2, 4])
    self.assertEqual([e.step for e in events.Scalars('eval/fid')], [2, 4])
    for key in ('d/fake', 'd/real', 'd/labelmix', 'perf/steps_per_sec'):
      self.assertLen(events.Scalars(key), 2)
    self.assertEqual([e.step for e in events.Images('samples')], [2, 4])

  def test_second_invocation_resumes_from_saved_step(self):
    self.assertEqual(self.runs['first_step'], 2)
    self.assertEqual(self.runs['first_eval_steps'], [2])
    # The second run evaluated at step 4 only: it started from step 2.
    self.assertEqual(self.runs['evaluation'].steps, [2, 4])
    self.assertEqual(int(self.runs['resumed'].step), 4)

  def test_resumed_run_equals_uninterrupted_run_bit_for_bit(self):
    straight, resumed = self.runs['straight'], self.runs['resumed']
    self.assertTrue(_leaves_equal(straight, resumed))
    # ...and training changed the networks.
    fresh = jax.device_get(train.init_train_state(_config(),
                                                  sharding.make_mesh(1)))
    self.assertFalse(_leaves_equal(fresh.generator.params,
                                   straight.generator.params))

  def test_evaluate_fn_sees_refreshed_ema_and_best_checkpoint_is_kept(self):
    final_stats = self.runs['resumed'].ema['batch_stats']
    seen_stats = self.runs['evaluation'].ema_stats[4]
    self.assertFalse(_leaves_equal(final_stats, seen_stats))
    best = checkpointing.create_best_manager(
        self.runs['root'] / 'split', metric='fid', mode='min')
    # FID 5 at step 2 beats FID 7 at step 4.
    self.assertEqual(best.all_steps(), [2])
    self.assertEqual(best.best_step(), 2)


class NonFiniteLossTest(parameterized.TestCase):

  def test_non_finite_loss_stops_naming_step_and_keeps_good_checkpoint(self):
    workdir = self.create_tempdir().full_path
    make_train_step = train.make_train_step
    poison = jax.jit(lambda tree: jax.tree.map(lambda x: x * jnp.nan, tree))

    def poisoned_make_train_step(*args):
      p_step = make_train_step(*args)

      def step_fn(state, batch, rng):
        state, metrics = p_step(state, batch, rng)
        if int(state.step) == 3:  # Step 4 then trains on NaN weights.
          state = state.replace(generator=state.generator.replace(
              params=poison(state.generator.params)))
        return state, metrics

      return step_fn

    with absltest.mock.patch.object(train, 'make_train_step',
                                    poisoned_make_train_step):
      with self.assertRaisesRegex(
          FloatingPointError, r'Non-finite loss at step 4: .*Stopped; the '
          r'checkpoint of step 2 is kept\.$'):
        train.train_and_evaluate(_config(num_steps=6), workdir,
                                 num_devices=1)
    manager = checkpointing.create_manager(workdir)
    self.assertEqual(manager.all_steps(), [2])


class _CountingSteps:
  """make_train_step's replacement: counts dispatches, checks none overlap.

  After dispatching step `signal_after`, sends `sig` to this process.
  """

  def __init__(self, signal_after=None, sig=signal.SIGTERM):
    self.dispatched, self.max_in_flight = 0, 0
    self._outputs, self._signal_after, self._sig = [], signal_after, sig
    self._make = train.make_train_step

  def __call__(self, *args):
    p_step = self._make(*args)

    def step_fn(state, batch, rng):
      running = sum(not all(x.is_ready() for x in jax.tree.leaves(out))
                    for out in self._outputs)
      self.max_in_flight = max(self.max_in_flight, running)
      state, metrics = p_step(state, batch, rng)
      self._outputs = [metrics]
      self.dispatched += 1
      if self.dispatched == self._signal_after:
        os.kill(os.getpid(), self._sig)
      return state, metrics

    return step_fn


class UnattendedTest(parameterized.TestCase):
  """Signals, damaged checkpoints and failed saves in train_and_evaluate."""

  @pytest.fixture(autouse=True)
  def _runs(self, runs):
    self.runs = runs

  def test_signal_stops_after_the_step_in_flight_with_its_checkpoint(self):
    # (SIGINT sets the same flag: StopRequestTest.)
    sig = signal.SIGTERM
    workdir = self.create_tempdir().full_path
    counter = _CountingSteps(signal_after=3, sig=sig)
    config = _config(num_steps=50, log_every_steps=1000,
                     checkpoint_every_steps=1000, sample_every_steps=1000)
    with absltest.mock.patch.object(train, 'make_train_step', counter):
      with self.assertLogs(level='WARNING') as logs:
        state = train.train_and_evaluate(config, workdir, num_devices=1)
    # No step was dispatched after the signal; none ran beside another.
    self.assertEqual(counter.dispatched, 3)
    self.assertEqual(counter.max_in_flight, 0)
    self.assertEqual(int(state.step), 3)
    self.assertEqual(checkpointing.create_manager(workdir).all_steps(), [3])
    self.assertIn(f'Stopped at step 3 on {signal.Signals(sig).name}; '
                  'checkpoint written.', '\n'.join(logs.output))

  def test_signal_before_the_first_step_writes_nothing(self):
    workdir = self.create_tempdir().full_path
    counter = _CountingSteps()
    started = []
    with actions.StopRequest() as stop:
      os.kill(os.getpid(), signal.SIGTERM)  # E.g. during start-up.
      with absltest.mock.patch.object(train, 'make_train_step', counter):
        train.train_and_evaluate(_config(num_steps=50), workdir,
                                 num_devices=1, stop_request=stop,
                                 on_started=lambda: started.append(1))
    self.assertEqual(counter.dispatched, 0)
    self.assertEqual(started, [])
    self.assertEqual(os.listdir(os.path.join(workdir, 'checkpoints')), [])

  def test_damaged_newest_checkpoints_are_set_aside_and_run_finishes(self):
    workdir = self.create_tempdir().full_path
    shutil.copytree(self.runs['root'] / 'straight', workdir,
                    dirs_exist_ok=True)
    folder = os.path.join(workdir, 'checkpoints')
    array_file = max(glob.glob(os.path.join(folder, '4', 'state',
                                            'ocdbt.process_0', 'd', '*')),
                     key=os.path.getsize)
    with open(array_file, 'r+b') as f:  # One flipped bit.
      f.seek(os.path.getsize(array_file) // 2)
      byte = f.read(1)[0]
      f.seek(-1, os.SEEK_CUR)
      f.write(bytes([byte ^ 0x04]))
    os.makedirs(os.path.join(folder, '70'))  # An empty step folder.
    with self.assertLogs(level='INFO') as logs:
      state = train.train_and_evaluate(_config(num_steps=4), workdir,
                                       num_devices=1)
    output = '\n'.join(logs.output)
    self.assertIn(f'Checkpoint {folder}/70 is damaged (an empty folder)',
                  output)
    # A flip in a compressed block fails to decode; elsewhere the values
    # restore wrong and differ from the fingerprint.
    self.assertRegex(output, f'Checkpoint {folder}/4 is damaged '
                     r'\((arrays differ from their fingerprint|does not '
                     r'restore)')
    self.assertIn('Resumed from the checkpoint of step 2.', output)
    self.assertCountEqual(
        os.listdir(os.path.join(workdir, checkpointing.DAMAGED_DIR)),
        ['4', '70'])
    self.assertEqual(checkpointing.create_manager(workdir).all_steps(),
                     [2, 4])
    # Steps 3 and 4 trained again: the straight run's state, bit for bit.
    self.assertTrue(_leaves_equal(jax.device_get(state),
                                  self.runs['straight']))

  def test_failed_save_stops_naming_step_path_and_os_error(self):
    workdir = self.create_tempdir().full_path
    finalize = atomicity.AtomicRenameTemporaryPath.finalize

    def disk_full_at_step_4(self, *args, **kwargs):
      if os.path.basename(str(self.get_final())) == '4':
        raise OSError(errno.ENOSPC, 'No space left on device')
      return finalize(self, *args, **kwargs)

    counter = _CountingSteps()
    with absltest.mock.patch.object(atomicity.AtomicRenameTemporaryPath,
                                    'finalize', disk_full_at_step_4), \
        absltest.mock.patch.object(train, 'make_train_step', counter):
      with self.assertRaises(checkpointing.CheckpointSaveError) as ctx:
        train.train_and_evaluate(
            _config(num_steps=8, sample_every_steps=1000), workdir,
            num_devices=1)
    folder = os.path.join(workdir, 'checkpoints')
    self.assertEqual(
        str(ctx.exception),
        f'saving the checkpoint of step 4 to {folder}/4 failed: [Errno 28] '
        'No space left on device; the checkpoint of step 2 is intact.')
    self.assertLessEqual(counter.dispatched, 6)  # Found at the next check.
    self.assertEqual(os.listdir(folder), ['2'])  # No temporary folder.
    mesh = sharding.make_mesh(1)
    abstract = train_state.abstract_train_state(_config())
    state, step = checkpointing.restore_newest_good(
        checkpointing.create_manager(workdir), abstract,
        sharding.state_sharding(mesh, abstract), lambda: None)
    self.assertEqual((step, int(state.step)), (2, 2))


class DevicesTest(parameterized.TestCase):

  def test_one_device_and_four_devices_agree(self):
    """Same losses and parameters on 1 and 4 devices (global-batch BN).

    Tolerances: the first step's losses agree to 1e-5 relative (only the
    reduction order differs); after two Adam steps (b1 = 0), where an update
    is about lr * sign(gradient) and reduction-order noise can flip the sign
    of near-zero gradients, the parameters agree to 2.5 * (lr_g + lr_d) and
    the second step's losses to 1e-3 relative.
    """
    config = _config()
    abstract = train_state.abstract_train_state(config)
    data_iter = input_pipeline.create_train_iterator(config)
    batches = [next(data_iter) for _ in range(2)]
    results = {}
    for n in (1, 4):
      mesh = sharding.make_mesh(n)
      state_sharding = sharding.state_sharding(mesh, abstract)
      state = train.init_train_state(config, mesh)
      p_step = train.make_train_step(config, mesh, state_sharding)
      rng = sharding.put_replicated(np.asarray(jax.device_get(state.rng)),
                                    mesh)
      metrics = []
      for batch in batches:
        state, m = p_step(state, sharding.global_batch(batch, mesh), rng)
        metrics.append(jax.device_get(m))
      self.assertEqual(
          state.generator.params['fc']['kernel'].sharding.mesh.devices.size,
          n)
      results[n] = (jax.device_get(state), metrics)
    (state1, metrics1), (state4, metrics4) = results[1], results[4]
    for key in metrics1[0]:
      np.testing.assert_allclose(metrics4[0][key], metrics1[0][key],
                                 rtol=1e-5, atol=1e-7, err_msg=key)
      np.testing.assert_allclose(metrics4[1][key], metrics1[1][key],
                                 rtol=1e-3, atol=1e-5, err_msg=key)
    atol = 2.5 * (config.optim.lr_g + config.optim.lr_d)
    for net in ('generator', 'discriminator'):
      for a, b in zip(jax.tree.leaves(getattr(state1, net).params),
                      jax.tree.leaves(getattr(state4, net).params)):
        np.testing.assert_allclose(b, a, rtol=0, atol=atol)

  def test_batch_that_does_not_divide_over_devices_is_an_error(self):
    config = _config()
    config.train.batch_size = 6
    with self.assertRaisesRegex(ValueError,
                                r'batch_size=6.*does not divide by the 4 '
                                r'devices'):
      train.train_and_evaluate(config, self.create_tempdir().full_path,
                               num_devices=4)


if __name__ == '__main__':
  absltest.main()
