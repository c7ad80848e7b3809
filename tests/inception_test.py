"""Tests of the FID Inception-v3 against the pytorch-fid fixture."""

import functools
import os
import subprocess
import sys
import tempfile
import unittest
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from oasis_jax.evaluation import frechet
from oasis_jax.evaluation import inception
from oasis_jax.pretrained import inception_weights
from oasis_jax.pretrained import weight_files

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SETS = ('real', 'fake', 'odd', 'wide')
# The fixture's input to the feature function: uint8, except 'odd', which
# goes in as floats in [-1, 1] (the generator's range) to cover that path.
_FLOAT_INPUT_SETS = ('odd',)
_BATCH_SIZE = 8  # One compiled network for every test.


def fixture_dir() -> str:
  return os.environ.get(
      'OASIS_FID_FIXTURE',
      os.path.join(_REPO, os.pardir, 'shared', 'fid_inception'))


def require_fixture(file: str = 'weights_fp16.npz') -> str:
  """The fixture's folder; skips the test when `file` is not in it."""
  path = fixture_dir()
  if not os.path.isfile(os.path.join(path, file)):
    raise unittest.SkipTest(
        f'pytorch-fid fixture not found at {path} (set OASIS_FID_FIXTURE).')
  return path


@functools.cache
def _fixture():
  path = require_fixture()
  with np.load(os.path.join(path, 'images.npz')) as f:
    images = dict(f)
  with np.load(os.path.join(path, 'expected.npz')) as f:
    expected = dict(f)
  return images, expected


@functools.cache
def _variables():
  return inception.load_inception_params(
      os.path.join(require_fixture(), 'weights_fp16.npz'),
      verify_sha256=False)


@functools.cache
def _feature_fn():
  return inception.make_feature_fn(_variables(), batch_size=_BATCH_SIZE)


@functools.cache
def _features(name: str) -> np.ndarray:
  images = _fixture()[0][name]
  if name in _FLOAT_INPUT_SETS:
    images = inception.uint8_to_float(images)
  return _feature_fn()(images)


def _rel(a, b) -> float:
  return float(np.abs(np.asarray(a) - b).max() / np.abs(b).max())


@functools.cache
def _fixture_state_dict() -> dict:
  with np.load(os.path.join(require_fixture(), 'weights_fp16.npz')) as f:
    return {k: (v.astype(np.float32) if v.dtype == np.float16 else v)
            for k, v in f.items()}


class PreprocessTest(parameterized.TestCase):

  @parameterized.parameters('real', 'odd', 'wide')
  def test_preprocess_matches_pytorch_fid_input(self, name):
    images, expected = _fixture()
    ours = np.asarray(inception.preprocess(images[name][:1]))
    ref = expected[f'{name}_input299_f32'].transpose(0, 2, 3, 1)
    self.assertEqual(ours.shape, (1, 299, 299, 3))
    self.assertLess(np.abs(ours - ref).max(), 1e-5)

  @parameterized.parameters(((5, 7), (299, 299)), ((256, 512), (299, 299)),
                            ((37, 53), (20, 90)), ((299, 299), (299, 299)))
  def test_resize_matches_torch_bilinear_without_antialias(self, size, out):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError:
      self.skipTest('torch is not installed')
    x = np.random.default_rng(0).random((2,) + size + (3,), np.float32)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(x.transpose(0, 3, 1, 2)), size=out, mode='bilinear',
        align_corners=False, antialias=False).numpy().transpose(0, 2, 3, 1)
    ours = np.asarray(inception.resize_bilinear(x, *out))
    self.assertLess(np.abs(ours - ref).max(), 2e-6)

  def test_uint8_and_float_inputs_agree(self):
    images = _fixture()[0]['wide']
    from_uint8 = np.asarray(inception.preprocess(images))
    from_float = np.asarray(inception.preprocess(
        inception.uint8_to_float(images)))
    self.assertLess(np.abs(from_uint8 - from_float).max(), 1e-6)

  def test_preprocess_rejects_non_rgb(self):
    with self.assertRaisesRegex(ValueError, 'RGB'):
      inception.preprocess(np.zeros((1, 8, 8, 1), np.uint8))


class FeatureTest(parameterized.TestCase):

  @parameterized.parameters(*_SETS)
  def test_pool3_features_match_pytorch_fid(self, name):
    expected = _fixture()[1]
    ours = _features(name)
    self.assertEqual(ours.shape, (expected[f'{name}_pool3_f64'].shape[0],
                                  inception.FEATURE_DIM))
    self.assertEqual(ours.dtype, np.float64)
    self.assertLess(_rel(ours, expected[f'{name}_pool3_f64']), 3e-4)
    self.assertLess(_rel(ours, expected[f'{name}_pool3_float64net']), 3e-4)

  def test_statistics_and_fid_match_pytorch_fid(self):
    expected = _fixture()[1]
    stats = {}
    for name in ('real', 'fake'):
      mu, sigma = frechet.compute_statistics(_features(name))
      stats[name] = (mu, sigma)
      self.assertLess(_rel(mu, expected[f'{name}_mu']), 1e-4)
      self.assertLess(_rel(np.diag(sigma), expected[f'{name}_sigma_diag']),
                      1e-4)
      self.assertLess(
          _rel(sigma[:256, :256], expected[f'{name}_sigma_block256']), 1e-4)
    value = frechet.frechet_distance(*stats['real'], *stats['fake'])
    self.assertLess(abs(value / float(expected['fid']) - 1), 1e-4)

  def test_features_are_sharded_over_the_data_axis(self):
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ('data',))
    fn = inception.make_feature_fn(_variables(), mesh=mesh)
    images = _fixture()[0]['wide']  # 2 images, padded to the device count.
    out = fn.device_features(images)
    n = len(jax.devices())
    self.assertEqual(out.shape, (-(-2 // n) * n, 2048))
    self.assertEqual(out.sharding.device_set, set(jax.devices()))
    if n > 1:
      self.assertEqual(out.sharding.spec[0], 'data')
      self.assertLen(out.addressable_shards, n)
      self.assertEqual(out.addressable_shards[0].data.shape[0],
                       out.shape[0] // n)
    features = np.asarray(out)[:2]
    self.assertLess(_rel(features, _fixture()[1]['wide_pool3_f64']), 3e-4)

  def test_batch_size_rounds_up_to_the_data_axis(self):
    fn = inception.make_feature_fn(_variables(), batch_size=3)
    self.assertEqual(fn.batch_size % fn.num_shards, 0)
    self.assertGreaterEqual(fn.batch_size, 3)


class WeightsTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    require_fixture()
    import torch  # pylint: disable=g-import-not-at-top
    cls.tmp = tempfile.TemporaryDirectory()
    cls.pth = os.path.join(cls.tmp.name, 'fixture.pth')
    torch.save({k: torch.from_numpy(v) for k, v in
                _fixture_state_dict().items()}, cls.pth)

  @classmethod
  def tearDownClass(cls):
    cls.tmp.cleanup()
    super().tearDownClass()

  def assertTreesEqual(self, a, b):
    self.assertEqual(jax.tree_util.tree_structure(a),
                     jax.tree_util.tree_structure(b))
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
      np.testing.assert_array_equal(x, y)

  def test_pth_and_npz_routes_give_the_same_network(self):
    from_pth = inception.load_inception_params(self.pth, verify_sha256=False)
    self.assertTreesEqual(from_pth, _variables())
    kernel = from_pth['params']['Mixed_6b']['branch7x7_2']['conv']['kernel']
    self.assertEqual(kernel.shape, (1, 7, 128, 128))  # kH, kW, I, O.
    self.assertEqual(
        from_pth['batch_stats']['Conv2d_1a_3x3']['bn']['var'].shape, (32,))

  def test_converter_round_trips_and_verifies(self):
    npz = os.path.join(tempfile.mkdtemp(dir=self.tmp.name), 'w.npz')
    back = os.path.join(tempfile.mkdtemp(dir=self.tmp.name), 'w.pth')
    sha = weight_files.sha256_file(self.pth)
    with mock.patch.object(inception_weights, 'WEIGHTS_SHA256', sha):
      inception_weights.check_inception_weights(self.pth)
      inception_weights.convert_weights(self.pth, npz)
      # Source and content hashes.
      inception_weights.check_inception_weights(npz)
      variables = inception.load_inception_params(npz)
      inception_weights.convert_weights(npz, back)
      with self.assertRaisesRegex(inception_weights.InceptionWeightsError,
                                  'SHA-256'):
        inception_weights.check_inception_weights(back)  # New bytes, new hash.
    self.assertTreesEqual(variables, _variables())
    self.assertTreesEqual(
        inception.load_inception_params(back, verify_sha256=False),
        _variables())
    # The real hash is not this file's: verification refuses both.
    for path in (self.pth, npz):
      with self.assertRaisesRegex(inception_weights.InceptionWeightsError,
                                  inception_weights.WEIGHTS_SHA256):
        inception.load_inception_params(path)

  def test_modified_npz_fails_the_content_check(self):
    npz = os.path.join(tempfile.mkdtemp(dir=self.tmp.name), 'w.npz')
    sha = weight_files.sha256_file(self.pth)
    with mock.patch.object(inception_weights, 'WEIGHTS_SHA256', sha):
      inception_weights.convert_weights(self.pth, npz)
      with np.load(npz) as f:
        arrays = dict(f)
      arrays['Conv2d_1a_3x3.bn.bias'] = arrays['Conv2d_1a_3x3.bn.bias'] + 1
      np.savez(npz, **arrays)
      with self.assertRaisesRegex(inception_weights.InceptionWeightsError,
                                  'content hash'):
        inception_weights.check_inception_weights(npz)

  def test_converter_cli(self):
    npz = os.path.join(tempfile.mkdtemp(dir=self.tmp.name), 'w.npz')
    result = subprocess.run(
        [sys.executable, '-m',
         'oasis_jax.pretrained.inception_weights', f'--input={self.pth}',
         f'--output={npz}', '--noverify_sha256'],
        cwd=_REPO, capture_output=True, text=True, check=False,
        env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
    self.assertEqual(result.returncode, 0, result.stderr)
    self.assertTreesEqual(
        inception.load_inception_params(npz, verify_sha256=False),
        _variables())

  def test_fixture_npz_is_refused_when_verifying(self):
    path = os.path.join(fixture_dir(), 'weights_fp16.npz')
    with self.assertRaisesRegex(inception_weights.InceptionWeightsError,
                                'not converted from'):
      inception_weights.check_inception_weights(path)

  @parameterized.parameters('', 'no/such/pt_inception.pth')
  def test_missing_file_says_which_file_where_and_which_key(self, path):
    with self.assertRaises(
        inception_weights.MissingInceptionWeightsError) as ctx:
      inception_weights.check_inception_weights(path)
    message = str(ctx.exception)
    self.assertIn(inception_weights.WEIGHTS_FILENAME, message)
    self.assertIn(inception_weights.WEIGHTS_URL, message)
    self.assertIn('config.eval.inception_weights', message)
    self.assertIn(path, message)
    with self.assertRaises(FileNotFoundError):
      inception.load_inception_params(path)

  def test_wrong_extension_is_refused(self):
    path = os.path.join(tempfile.mkdtemp(dir=self.tmp.name), 'weight_files.bin')
    open(path, 'wb').close()
    with self.assertRaisesRegex(inception_weights.InceptionWeightsError,
                                '.npz'):
      inception_weights.check_inception_weights(path)

  def test_incomplete_state_dict_is_refused(self):
    state = dict(_fixture_state_dict())
    del state['Mixed_7c.branch_pool.conv.weight']
    state['extra.weight'] = np.zeros(3, np.float32)
    with self.assertRaisesRegex(inception_weights.InceptionWeightsError,
                                'missing Mixed_7c.branch_pool.conv.weight'):
      inception.state_dict_to_variables(state)
    state = dict(_fixture_state_dict())
    state['extra.weight'] = np.zeros(3, np.float32)
    with self.assertRaisesRegex(inception_weights.InceptionWeightsError,
                                'unexpected extra.weight'):
      inception.state_dict_to_variables(state)


if __name__ == '__main__':
  absltest.main()
