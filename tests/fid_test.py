"""Tests of the FID evaluation during training and of its helpers."""

import atexit
import functools
import json
import math
import os
import shutil
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from configs import tiny
from oasis_jax.training import checkpointing
from oasis_jax.evaluation import inception
from oasis_jax.pretrained import inception_weights
from oasis_jax import main
from oasis_jax.runtime import sharding
from oasis_jax.training import train
from oasis_jax.evaluation import common
from oasis_jax.evaluation import fid as fid_evaluator

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FID_STEPS = (2, 4)


def fixture_weights() -> str:
  """The pytorch-fid fixture's random weights (skips the test without it)."""
  path = os.path.join(
      os.environ.get('OASIS_FID_FIXTURE',
                     os.path.join(_REPO, os.pardir, 'shared',
                                  'fid_inception')), 'weights_fp16.npz')
  if not os.path.isfile(path):
    pytest.skip(f'pytorch-fid fixture not found at {path} (set '
                'OASIS_FID_FIXTURE).')
  return path


def fid_config(weights: str):
  """The tiny config with FID every 2 of 4 steps on 4 validation images."""
  config = tiny.get_config()
  config.train.num_steps = 4
  config.eval.fid_every_steps = 2
  config.eval.num_fid_images = 4
  config.eval.inception_weights = weights
  config.eval.verify_inception_weights = False  # Random-weight fixture.
  return config


@functools.lru_cache(maxsize=None)
def trained_run():
  """A 4-step tiny run with FID at steps 2 and 4, shared by the test files.

  (evaluate_test.py runs the checkpoint-mode CLI on the same workdir; the
  run is made once per test process.) The real-statistics computation is
  counted with a spy.

  Returns:
    dict: root, workdir, config, fids {step: FID returned}, compute_calls,
    state (final train state on the host).
  """
  root = tempfile.mkdtemp(prefix='fid_test_')
  atexit.register(shutil.rmtree, root, ignore_errors=True)
  weights = os.path.join(root, 'inception_random.npz')
  shutil.copyfile(fixture_weights(), weights)
  config = fid_config(weights)
  workdir = os.path.join(root, 'run')
  os.makedirs(workdir)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))  # As main.py does.
  calls = []
  compute = fid_evaluator.compute_real_statistics

  def spy(evaluator):
    calls.append(evaluator.num_images)
    return compute(evaluator)

  fids = {}
  mesh = sharding.make_mesh(1)
  fid_evaluator.compute_real_statistics = spy
  try:
    evaluate_fn = main.create_evaluate_fn(config, workdir, mesh)

    def recording(state, step):
      out = evaluate_fn(state, step)
      fids[step] = out['fid']
      return out

    state = train.train_and_evaluate(config, workdir, evaluate_fn=recording,
                                     num_devices=1)
  finally:
    fid_evaluator.compute_real_statistics = compute
  return dict(root=root, workdir=workdir, config=config, fids=fids,
              compute_calls=calls, state=jax.device_get(state))


class FidDuringTrainingTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.trained = trained_run()

  def test_fid_is_computed_at_eval_steps_and_finite(self):
    fids = self.trained['fids']
    self.assertEqual(sorted(fids), list(FID_STEPS))
    for value in fids.values():
      self.assertIsInstance(value, float)
      self.assertTrue(math.isfinite(value))
      self.assertGreater(value, 0.0)

  def test_fid_reaches_tensorboard(self):
    events = event_accumulator.EventAccumulator(
        os.path.join(self.trained['workdir'], 'tensorboard'))
    events.Reload()
    scalars = events.Scalars('eval/fid')
    self.assertEqual([e.step for e in scalars], list(FID_STEPS))
    for e in scalars:
      self.assertAlmostEqual(e.value / self.trained['fids'][e.step], 1.0,
                             places=5)

  def test_real_statistics_are_computed_once_and_cached(self):
    # Two evaluations, one computation of the real statistics.
    self.assertEqual(self.trained['compute_calls'], [4])
    cache = os.path.join(self.trained['workdir'], fid_evaluator.FID_STATS_DIR)
    files = os.listdir(cache)
    self.assertLen(files, 1)
    with np.load(os.path.join(cache, files[0])) as data:
      self.assertEqual(data['mu'].shape, (inception.FEATURE_DIM,))
      self.assertEqual(str(data['key']),
                       fid_evaluator.fid_cache_key(self.trained['config']))

  def test_best_checkpoint_is_the_step_of_lowest_fid(self):
    fids = self.trained['fids']
    best = checkpointing.create_best_manager(
        self.trained['workdir'], metric='fid', mode='min')
    self.assertEqual(best.best_step(), min(fids, key=fids.get))

  def test_noise_depends_on_the_example_index_only(self):
    config = self.trained['config']
    mesh = sharding.make_mesh(2)
    generate = common.make_generate_fn(config, mesh)
    variables = common.generator_variables(self.trained['state'])
    rng = np.random.default_rng(0)
    label = rng.integers(0, 4, (4, 32, 32)).astype(np.int32)
    index = np.array([7, 3, 0, 9], np.int32)
    put = lambda x: sharding.global_batch({'x': x}, mesh)['x']
    out = np.asarray(generate(variables, put(label), put(index)))
    order = np.array([2, 0, 3, 1])
    shuffled = np.asarray(generate(variables, put(label[order]),
                                   put(index[order])))
    np.testing.assert_allclose(shuffled, out[order], atol=1e-5)
    # Another index: another noise, another image.
    other = np.asarray(generate(variables, put(label), put(index + 1)))
    self.assertGreater(np.abs(other - out).max(), 1e-4)


class StartUpTest(parameterized.TestCase):

  def test_missing_weights_fail_at_start_up_with_clear_message(self):
    missing = os.path.join(self.create_tempdir().full_path, 'nowhere.pth')
    config = fid_config(missing)
    workdir = self.create_tempdir().full_path
    with self.assertRaises(
        inception_weights.MissingInceptionWeightsError) as ctx:
      main.create_evaluate_fn(config, workdir, sharding.make_mesh(1))
    message = str(ctx.exception)
    for part in (missing, inception_weights.WEIGHTS_FILENAME,
                 inception_weights.WEIGHTS_URL,
                 'config.eval.inception_weights'):
      self.assertIn(part, message)
    self.assertEmpty(os.listdir(workdir))  # Nothing trained or written.

  def test_no_weights_needed_when_fid_is_off(self):
    config = fid_config('')
    config.eval.fid_every_steps = -1
    self.assertIsNone(main.create_evaluate_fn(
        config, self.create_tempdir().full_path, sharding.make_mesh(1)))

  def test_unverified_fixture_weights_are_refused_when_verifying(self):
    config = fid_config(fixture_weights())
    config.eval.verify_inception_weights = True
    with self.assertRaises(inception_weights.InceptionWeightsError):
      main.create_evaluate_fn(config, self.create_tempdir().full_path,
                              sharding.make_mesh(1))


class FidCacheKeyTest(parameterized.TestCase):

  def test_cache_key_covers_images_and_weights(self):
    root = self.create_tempdir().full_path
    weights = os.path.join(root, 'w.npz')
    with open(weights, 'wb') as f:
      f.write(b'x')
    config = fid_config(weights)
    key = fid_evaluator.fid_cache_key(config)
    self.assertEqual(fid_evaluator.fid_cache_key(fid_config(weights)), key)
    config.eval.num_fid_images = 3
    self.assertNotEqual(fid_evaluator.fid_cache_key(config), key)
    config = fid_config(weights)
    config.data.image_size = 64
    self.assertNotEqual(fid_evaluator.fid_cache_key(config), key)
    with open(weights, 'wb') as f:
      f.write(b'other weights')
    self.assertNotEqual(fid_evaluator.fid_cache_key(fid_config(weights)), key)
    parts = json.loads(key)
    self.assertEqual(parts['split'], 'val')
    self.assertEqual(parts['name'], 'synthetic')


if __name__ == '__main__':
  absltest.main()
