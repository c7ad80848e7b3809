"""Tests of the VGG-19 perceptual loss: parity with the official OASIS code,
the weights reader, its checks, messages and converter."""

import json
import os
import subprocess
import sys

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

import ablation_fixtures as fixtures
from configs import tiny
from oasis_jax.training import losses
from oasis_jax import models
from oasis_jax.training import steps
from oasis_jax.pretrained import vgg_weights
from oasis_jax.models import vgg

_TINY_WIDTHS = (4, 4, 8, 8, 8)


def run_fixture(directory: str) -> dict[str, np.ndarray]:
  """The fixture's outputs computed by the port (NCHW), from meta.json."""
  with open(os.path.join(directory, 'meta.json')) as f:
    meta = json.load(f)
  np.testing.assert_allclose(meta['loss']['feature_weights'],
                             losses.VGG_LAYER_WEIGHTS)
  lambda_vgg = float(meta['loss']['lambda_vgg_default_official_config'])
  params, _ = vgg_weights.load_vgg_params(
      os.path.join(directory, meta['weights']['file']), verify_sha256=False)
  inputs = fixtures.load(os.path.join(directory, 'inputs.npz'))
  fake, real = fixtures.nhwc(inputs['fake']), fixtures.nhwc(inputs['real'])
  config = tiny.get_config()
  net = models.make_vgg(config, params)
  loss_fn = lambda f: steps.vgg_loss(params, f, real, config=config)
  with jax.default_matmul_precision('highest'):
    fake_feats = net.apply({'params': params}, fake)
    real_feats = net.apply({'params': params}, real)
    loss, grad = jax.value_and_grad(loss_fn)(fake)
    grad_g = jax.grad(lambda f: lambda_vgg * loss_fn(f))(fake)
  out = {}
  for name, f, r in zip(vgg.FEATURE_NAMES, fake_feats, real_feats):
    out[f'fake_{name}'] = fixtures.nchw(f)
    out[f'real_{name}'] = fixtures.nchw(r)
  out['l1_terms'] = np.array([np.mean(np.abs(np.asarray(f) - np.asarray(r)))
                              for f, r in zip(fake_feats, real_feats)])
  out.update(loss_vgg=np.asarray(loss),
             loss_G_vgg=np.asarray(lambda_vgg * loss),
             grad_fake_loss_vgg=fixtures.nchw(grad),
             grad_fake_loss_G_vgg=fixtures.nchw(grad_g))
  return out


def compare(directory: str, port: dict[str, np.ndarray]) -> dict[str, str]:
  """Arrays beyond tolerance: err = max|port - ref| / max|ref|."""
  refs = fixtures.load(os.path.join(directory, 'outputs.npz'))
  return fixtures.failures(fixtures.tolerances(directory), refs, port)


_DIRS = fixtures.fixture_dirs('vgg_loss')


class VggLossParityTest(parameterized.TestCase):

  def test_fixtures_are_found(self):
    fixtures.require_dirs(_DIRS, 'vgg_loss')

  @parameterized.named_parameters(
      *fixtures.parameters(_DIRS))
  def test_port_matches_official_fixture(self, directory):
    fixtures.require_dirs(_DIRS, 'vgg_loss')
    failures = compare(directory, run_fixture(directory))
    self.assertEmpty(failures, f'{directory}: {failures}')

  def test_perturbed_fixture_fails(self):
    fixtures.require_dirs(_DIRS, 'vgg_loss')
    src = _DIRS[0]
    dst = self.create_tempdir().full_path
    for name in os.listdir(src):
      if name != 'outputs.npz':
        os.symlink(os.path.join(src, name), os.path.join(dst, name))
    outputs = fixtures.load(os.path.join(src, 'outputs.npz'))
    grad = outputs['grad_fake_loss_vgg'].copy()
    grad.reshape(-1)[np.argmax(np.abs(grad))] *= 1.01  # 1e-2 of the scale.
    outputs['grad_fake_loss_vgg'] = grad
    np.savez(os.path.join(dst, 'outputs.npz'), **outputs)
    failures = compare(dst, run_fixture(dst))
    self.assertEqual(list(failures), ['grad_fake_loss_vgg'])


class VggNetworkTest(parameterized.TestCase):

  def test_max_pool_floors_odd_sizes(self):
    x = jnp.arange(15, dtype=jnp.float32).reshape(1, 3, 5, 1)
    pooled = np.asarray(vgg.max_pool2x_floor(x))
    np.testing.assert_array_equal(pooled[0, :, :, 0], [[6, 8]])

  def test_feature_sizes_and_widths_follow_the_weights(self):
    params, widths = vgg_weights.state_dict_to_params(
        vgg_weights.random_state_dict(_TINY_WIDTHS))
    self.assertEqual(widths, _TINY_WIDTHS)
    feats = models.make_vgg(tiny.get_config(), params).apply(
        {'params': params}, jnp.zeros((1, 33, 20, 3)))
    self.assertEqual([f.shape[1:] for f in feats],
                     [(33, 20, 4), (16, 10, 4), (8, 5, 8), (4, 2, 8),
                      (2, 1, 8)])

  def test_loss_weights_layers_and_ignores_real_gradient(self):
    fake = [jnp.full((1, 2), 1.0)] * 5
    real = [jnp.zeros((1, 2))] * 5
    self.assertAlmostEqual(float(losses.vgg_loss(fake, real)),
                           1 / 32 + 1 / 16 + 1 / 8 + 1 / 4 + 1, places=6)
    grad_real = jax.grad(lambda r: losses.vgg_loss(fake, [r] * 5))(real[0])
    np.testing.assert_array_equal(grad_real, 0.0)

  def test_train_step_without_vgg_params_is_an_error(self):
    config = tiny.get_config()
    config.loss.use_vgg = True
    with self.assertRaisesRegex(ValueError, 'config.loss.use_vgg=True'):
      steps.train_step(None, {}, None, config=config)


class VggWeightsTest(parameterized.TestCase):

  def _write_npz(self, state, name='w.npz'):
    path = os.path.join(self.create_tempdir().full_path, name)
    np.savez(path, **state)
    return path

  def test_missing_file_message_names_file_url_and_key(self):
    config = tiny.get_config()
    config.loss.use_vgg = True
    config.loss.vgg_weights = '/nonexistent/vgg19.pth'
    with self.assertRaises(vgg_weights.MissingVggWeightsError) as e:
      vgg_weights.load_for_config(config)
    message = str(e.exception)
    self.assertNotIn('\n', message)
    for part in ('/nonexistent/vgg19.pth', vgg_weights.WEIGHTS_FILENAME,
                 vgg_weights.WEIGHTS_URL, 'config.loss.vgg_weights'):
      self.assertIn(part, message)

  def test_empty_path_message_says_the_key_is_empty(self):
    with self.assertRaisesRegex(vgg_weights.MissingVggWeightsError,
                                r'config.loss.vgg_weights is empty'):
      vgg_weights.check_vgg_weights('')

  def test_loss_off_loads_nothing(self):
    self.assertIsNone(vgg_weights.load_for_config(tiny.get_config()))

  def test_unverified_npz_is_refused_when_verifying(self):
    path = self._write_npz(vgg_weights.random_state_dict(_TINY_WIDTHS))
    with self.assertRaisesRegex(vgg_weights.VggWeightsError,
                                'was not converted from vgg19-dcbb9e9d'):
      vgg_weights.check_vgg_weights(path)
    vgg_weights.check_vgg_weights(path, verify_sha256=False)

  def test_npz_checks_recorded_source_and_content_hash(self):
    src = self._write_npz(vgg_weights.random_state_dict(_TINY_WIDTHS))
    npz = os.path.join(os.path.dirname(src), 'converted.npz')
    vgg_weights.convert_weights(src, npz, verify_sha256=False)
    data = fixtures.load(npz)
    # As if converted from the published file (its SHA-256's prefix).
    data['__source_sha256__'] = np.array('dcbb9e9d' + '0' * 56)
    np.savez(npz, **data)
    vgg_weights.check_vgg_weights(npz)
    data['features.0.bias'] = data['features.0.bias'] + 1
    np.savez(npz, **data)
    with self.assertRaisesRegex(vgg_weights.VggWeightsError,
                                'do not match the content hash'):
      vgg_weights.check_vgg_weights(npz)

  def test_wrong_shapes_are_refused_naming_the_key(self):
    state = vgg_weights.random_state_dict(_TINY_WIDTHS)
    state['features.7.weight'] = state['features.7.weight'][:, :2]
    path = self._write_npz(state)
    with self.assertRaisesRegex(vgg_weights.VggWeightsError,
                                'features.7.weight has shape'):
      vgg_weights.load_vgg_params(path, verify_sha256=False)

  def test_weights_are_upcast_exactly_to_float32(self):
    state = vgg_weights.random_state_dict(_TINY_WIDTHS, dtype=np.float16)
    params, _ = vgg_weights.load_vgg_params(self._write_npz(state),
                                            verify_sha256=False)
    self.assertEqual(params['conv_28_kernel'].dtype, np.float32)
    np.testing.assert_array_equal(
        params['conv_2_kernel'],
        state['features.2.weight'].astype(np.float32).transpose(2, 3, 1, 0))

  def test_pth_with_another_hash_is_refused_and_converts_without_check(self):
    torch = self._torch()
    state = vgg_weights.random_state_dict(_TINY_WIDTHS)
    state['classifier.0.weight'] = np.zeros((2, 2), np.float32)
    directory = self.create_tempdir().full_path
    pth = os.path.join(directory, 'vgg19-dcbb9e9d.pth')
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, pth)
    with self.assertRaisesRegex(vgg_weights.VggWeightsError,
                                'does not start with dcbb9e9d'):
      vgg_weights.check_vgg_weights(pth)
    npz = os.path.join(directory, 'out.npz')
    result = subprocess.run(
        [sys.executable, '-m', 'oasis_jax.pretrained.vgg_weights',
         f'--input={pth}',
         f'--output={npz}'], capture_output=True, text=True, check=False)
    self.assertNotEqual(result.returncode, 0)
    self.assertIn('FATAL', result.stderr)
    self.assertIn('dcbb9e9d', result.stderr.strip().splitlines()[-1])
    vgg_weights.convert_weights(pth, npz, verify_sha256=False)
    converted = vgg_weights.read_state_dict(npz, verify_sha256=False)
    self.assertNotIn('classifier.0.weight', converted)
    for key, value in converted.items():
      np.testing.assert_array_equal(value, state[key])

  def _torch(self):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError:
      self.skipTest('torch is not installed')
    return torch


if __name__ == '__main__':
  absltest.main()
