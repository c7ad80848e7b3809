"""Tests of the Fréchet distance, statistics, cache and folder mode."""

import contextlib
import io
import os
import tempfile

from absl import flags
from absl.testing import absltest
from absl.testing import flagsaver
from absl.testing import parameterized
import numpy as np
from PIL import Image
import scipy.linalg

from oasis_jax import evaluate
from oasis_jax.evaluation import frechet
from oasis_jax.pretrained import inception_weights

from inception_test import require_fixture  # The pytorch-fid fixture.


def _require_fixture() -> str:
  return require_fixture('expected.npz')


def _random_spd(rng, d):
  a = rng.normal(size=(d, d))
  return a @ a.T / d + 0.1 * np.eye(d)


def _reference_fid(mu1, s1, mu2, s2) -> float:
  """Textbook formula with scipy's sqrtm, float64."""
  covmean = scipy.linalg.sqrtm(s1 @ s2).real
  return float(np.sum((mu1 - mu2)**2) + np.trace(s1) + np.trace(s2) -
               2 * np.trace(covmean))


class FrechetDistanceTest(parameterized.TestCase):

  @parameterized.parameters('eigh', 'sqrtm')
  def test_diagonal_gaussians_closed_form(self, method):
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    # ||mu1 - mu2||^2 + sum (sqrt(var1) - sqrt(var2))^2 = 7.25 + 5.
    value = frechet.frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2),
                                     method=method)
    self.assertAlmostEqual(value, 12.25, places=10)

  def test_one_dimensional(self):
    # (mu1 - mu2)^2 + (s1 - s2)^2 for standard deviations s1, s2.
    self.assertAlmostEqual(
        frechet.frechet_distance([3.0], [[4.0]], [1.0], [[1.0]]), 4.0 + 1.0,
        places=12)

  @parameterized.parameters('eigh', 'sqrtm')
  def test_matches_float64_reference_on_random_gaussians(self, method):
    rng = np.random.default_rng(1)
    d = 12
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    value = frechet.frechet_distance(mu1, s1, mu2, s2, method=method)
    self.assertAlmostEqual(value, _reference_fid(mu1, s1, mu2, s2), places=9)
    self.assertAlmostEqual(value, frechet.frechet_distance(mu2, s2, mu1, s1,
                                                           method=method),
                           places=9)

  @parameterized.parameters((200, 16), (10, 64))  # Full rank, rank deficient.
  def test_fid_of_a_set_with_itself_is_zero(self, n, d):
    features = np.random.default_rng(2).normal(size=(n, d)) * 3 + 1
    mu, sigma = frechet.compute_statistics(features)
    self.assertLess(abs(frechet.frechet_distance(mu, sigma, mu, sigma)),
                    1e-9 * np.trace(sigma))
    self.assertLess(abs(frechet.fid_from_features(features, features)),
                    1e-9 * np.trace(sigma))

  def test_statistics_are_float64_and_like_numpy(self):
    features = np.random.default_rng(3).normal(size=(7, 5)).astype(np.float32)
    mu, sigma = frechet.compute_statistics(features)
    self.assertEqual(mu.dtype, np.float64)
    self.assertEqual(sigma.dtype, np.float64)
    np.testing.assert_allclose(mu, features.astype(np.float64).mean(0),
                               rtol=1e-15)
    np.testing.assert_allclose(
        sigma, np.cov(features.astype(np.float64), rowvar=False), rtol=1e-14)
    with self.assertRaisesRegex(ValueError, 'N >= 2'):
      frechet.compute_statistics(features[:1])

  def test_fixture_statistics_and_fid_from_stored_features(self):
    with np.load(os.path.join(_require_fixture(), 'expected.npz')) as f:
      expected = dict(f)
    stats = {}
    for name in ('real', 'fake'):
      mu, sigma = frechet.compute_statistics(expected[f'{name}_pool3_f64'])
      np.testing.assert_allclose(mu, expected[f'{name}_mu'], rtol=1e-10)
      np.testing.assert_allclose(np.diag(sigma),
                                 expected[f'{name}_sigma_diag'], rtol=1e-10)
      np.testing.assert_allclose(sigma[:256, :256],
                                 expected[f'{name}_sigma_block256'],
                                 rtol=1e-10, atol=1e-12)
      self.assertAlmostEqual(np.trace(sigma) / expected[f'{name}_sigma_trace'],
                             1, places=10)
      stats[name] = mu, sigma
    value = frechet.frechet_distance(*stats['real'], *stats['fake'])
    self.assertLess(abs(value / float(expected['fid']) - 1), 1e-5)
    self.assertLess(abs(value / float(expected['fid_exact']) - 1), 1e-9)


class CacheTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = tempfile.mkdtemp()
    self.calls = 0

  def compute(self, value=1.0):
    def fn():
      self.calls += 1
      return np.full(3, value), np.eye(3) * value
    return fn

  def test_statistics_are_computed_once_and_reused(self):
    key = frechet.make_cache_key(data='ade20k', split='validation',
                                 size=(256, 256))
    mu, sigma = frechet.load_or_compute_real_statistics(self.tmp, key,
                                                        self.compute(2.0))
    mu2, sigma2 = frechet.load_or_compute_real_statistics(
        self.tmp, key, self.compute(5.0))
    self.assertEqual(self.calls, 1)
    np.testing.assert_array_equal(mu, mu2)
    np.testing.assert_array_equal(sigma, sigma2)
    self.assertEqual(mu2.dtype, np.float64)
    self.assertLen(os.listdir(self.tmp), 1)

  def test_cache_is_invalidated_when_the_size_changes(self):
    for size in ((256, 256), (256, 512), (256, 256)):
      key = frechet.make_cache_key(data='cityscapes', size=size)
      mu, _ = frechet.load_or_compute_real_statistics(
          self.tmp, key, self.compute(float(size[1])))
      self.assertEqual(mu[0], size[1])
    self.assertEqual(self.calls, 2)  # The third call hit the first's cache.

  def test_cache_is_invalidated_when_the_data_changes(self):
    folder = tempfile.mkdtemp()
    image = os.path.join(folder, 'a.png')
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(image)

    def key():
      return frechet.make_cache_key(files=frechet.fingerprint_files([image]))

    frechet.load_or_compute_real_statistics(self.tmp, key(), self.compute())
    frechet.load_or_compute_real_statistics(self.tmp, key(), self.compute())
    self.assertEqual(self.calls, 1)
    Image.fromarray(np.ones((5, 4, 3), np.uint8)).save(image)
    frechet.load_or_compute_real_statistics(self.tmp, key(), self.compute())
    self.assertEqual(self.calls, 2)

  def test_a_file_holding_another_key_is_not_used(self):
    key = frechet.make_cache_key(data='a')
    frechet.load_or_compute_real_statistics(self.tmp, key, self.compute(1.0))
    [name] = os.listdir(self.tmp)
    path = os.path.join(self.tmp, name)
    with np.load(path) as f:
      arrays = dict(f)
    arrays['key'] = np.array('something else')
    np.savez(path, **arrays)
    mu, _ = frechet.load_or_compute_real_statistics(self.tmp, key,
                                                    self.compute(3.0))
    self.assertEqual(self.calls, 2)
    self.assertEqual(mu[0], 3.0)

  def test_no_cache_dir_always_computes(self):
    for _ in range(2):
      frechet.load_or_compute_real_statistics(None, 'k', self.compute())
    self.assertEqual(self.calls, 2)


class FolderModeTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    path = _require_fixture()
    cls.tmp = tempfile.TemporaryDirectory()
    cls.weights = os.path.join(path, 'weights_fp16.npz')
    with np.load(os.path.join(path, 'images.npz')) as f:
      images = dict(f)
    with np.load(os.path.join(path, 'expected.npz')) as f:
      cls.expected_fid = float(f['fid'])
    cls.dirs = {}
    for name in ('real', 'fake'):
      folder = os.path.join(cls.tmp.name, name)
      os.makedirs(folder)
      for i, image in enumerate(images[name]):
        Image.fromarray(image).save(os.path.join(folder, f'{i:03d}.png'))
      cls.dirs[name] = folder
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()

  @classmethod
  def tearDownClass(cls):
    cls.tmp.cleanup()
    super().tearDownClass()

  def test_evaluate_fid_prints_pytorch_fids_value(self):
    cache = os.path.join(self.tmp.name, 'cache')
    values = dict(real=self.dirs['real'], fake=self.dirs['fake'],
                  inception_weights=self.weights, batch_size=8,
                  verify_inception_weights=False, fid_cache_dir=cache)
    out = io.StringIO()
    with flagsaver.flagsaver(**values), contextlib.redirect_stdout(out):
      evaluate.main(['evaluate', 'fid'])
    printed = float(out.getvalue().strip().split()[-1])
    self.assertLess(abs(printed / self.expected_fid - 1), 1e-4)
    self.assertLen(os.listdir(cache), 1)  # The real statistics were cached.

  def test_missing_weights_names_the_flag(self):
    with self.assertRaises(
        inception_weights.MissingInceptionWeightsError) as ctx:
      frechet.main(self.dirs['real'], self.dirs['fake'], '')
    self.assertIn('--inception_weights', str(ctx.exception))
    self.assertIn(inception_weights.WEIGHTS_URL, str(ctx.exception))

  def test_unknown_mode_is_a_usage_error(self):
    with self.assertRaises(evaluate.app.UsageError):
      evaluate.main(['evaluate', 'nonsense'])
    with self.assertRaises(evaluate.app.UsageError):
      evaluate.main(['evaluate'])

  def test_statistics_file_stands_in_for_a_folder(self):
    path = os.path.join(self.tmp.name, 'stats.npz')
    mu, sigma = np.arange(3.0), np.eye(3)
    np.savez(path, mu=mu.astype(np.float32), sigma=sigma)
    loaded = frechet.load_statistics(path)
    np.testing.assert_array_equal(loaded[0], mu)
    np.testing.assert_array_equal(loaded[1], sigma)
    self.assertEqual(loaded[0].dtype, np.float64)

  def test_empty_folder_is_an_error(self):
    with self.assertRaisesRegex(ValueError, 'No images'):
      frechet.list_images(tempfile.mkdtemp(dir=self.tmp.name))


if __name__ == '__main__':
  absltest.main()
