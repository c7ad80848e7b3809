"""Tests of the training loop: artifacts, exact resume, devices, NaN stop."""

import os
import signal

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from tensorboard.backend.event_processing import event_accumulator

from configs import tiny
from oasis_jax import checkpointing
from oasis_jax import input_pipeline
from oasis_jax import sharding
from oasis_jax import train


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
      with self.assertRaisesRegex(FloatingPointError,
                                  r'Non-finite loss at step 4'):
        train.train_and_evaluate(_config(num_steps=6), workdir,
                                 num_devices=1)
    manager = checkpointing.create_manager(workdir)
    self.assertEqual(manager.all_steps(), [2])


class StopRequestTest(parameterized.TestCase):

  @parameterized.parameters(signal.SIGTERM, signal.SIGINT)
  def test_signal_sets_the_flag_and_a_second_one_is_not_caught(self, sig):
    calls = []

    def before(signum, frame):
      del frame
      calls.append(signum)

    original = signal.signal(sig, before)
    try:
      with train._StopRequest() as stop:
        self.assertFalse(stop.should_stop(sync=False))
        os.kill(os.getpid(), sig)
        self.assertTrue(stop.should_stop(sync=False))
        self.assertEqual(calls, [])
        os.kill(os.getpid(), sig)  # A second signal: the handler from before.
        self.assertEqual(calls, [sig])
      self.assertIs(signal.getsignal(sig), before)
    finally:
      signal.signal(sig, original)


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
    abstract = train.abstract_train_state(config)
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
