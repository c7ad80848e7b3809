"""Tests of the official-weights converter, its CLI and the inference checkpoint."""

import functools
import json
import os
import pathlib
import subprocess
import sys

from absl.testing import absltest
import jax
import numpy as np

from configs import default as default_lib
from oasis_jax.inference import export_format
from oasis_jax.pretrained import oasis as oasis_weights
from oasis_jax.training import train_state

_REPO = pathlib.Path(__file__).resolve().parents[1]
_TINY_SQUARE = _REPO / '..' / 'shared' / 'parity' / 'tiny_square'

# The model of the tiny_square fixture, as command-line overrides.
_OVERRIDES = {
    'data.num_classes': 12, 'data.image_size': 64,
    'generator.channels': 4, 'generator.z_dim': 8,
    'generator.spade_hidden': 8,
    'discriminator.channels': '(8,8,16,16,32,32)',
    'discriminator.last_channels': 8,
}


def tiny_square_config():
  c = default_lib.get_config()
  for key, value in _OVERRIDES.items():
    section, name = key.split('.')
    if isinstance(value, str):
      value = tuple(int(x) for x in value.strip('()').split(','))
    setattr(getattr(c, section), name, value)
  return c


class ConversionWithoutFixturesTest(absltest.TestCase):

  def test_fresh_model_exports_official_key_names(self):
    c = tiny_square_config()
    (g_p, g_s), (d_p, d_s) = jax.jit(functools.partial(
        train_state.init_variables, c))(jax.random.PRNGKey(0))
    sd = oasis_weights.flax_to_torch({'params': g_p, 'batch_stats': g_s})
    keys = list(sd)
    self.assertEqual(keys[:2], ['conv_img.weight', 'conv_img.bias'])
    self.assertEqual(keys[-2:], ['fc.weight', 'fc.bias'])
    self.assertIn('body.2.conv_s.weight_orig', sd)
    self.assertNotIn('body.2.conv_s.bias', sd)
    self.assertEqual(sd['body.0.norm_0.first_norm.num_batches_tracked'], 0)
    self.assertEqual(sd['fc.weight'].shape, (64, 20, 3, 3))
    self.assertLen(sd, 208)
    d_sd = oasis_weights.flax_to_torch({'params': d_p, 'batch_stats': d_s})
    self.assertEqual(list(d_sd)[0], 'body_up.0.conv1.2.bias')
    self.assertIn('body_down.0.conv1.0.weight_orig', d_sd)
    self.assertIn('body_down.1.conv1.1.weight_u', d_sd)
    self.assertLen(d_sd, 130)
    back = oasis_weights.torch_to_flax(sd)
    jax.tree.map(np.testing.assert_array_equal, back,
                 {'params': g_p, 'batch_stats': g_s})

  def test_mismatched_config_names_keys_and_shapes(self):
    c = tiny_square_config()
    (g_p, g_s), _ = jax.jit(functools.partial(
        train_state.init_variables, c))(jax.random.PRNGKey(0))
    sd = oasis_weights.flax_to_torch({'params': g_p, 'batch_stats': g_s})
    c.data.num_classes = 13
    (e_p, e_s), _ = jax.eval_shape(
        lambda: train_state.init_variables(c, jax.random.PRNGKey(0)))
    with self.assertRaisesRegex(oasis_weights.ConversionError,
                                r'G.pth does not fit(.|\n)*body_0/norm_0/'
                                r'mlp_shared/kernel: \(3, 3, 20, 8\) vs '
                                r'expected \(3, 3, 21, 8\)(.|\n)*num_classes'):
      oasis_weights.check_against(oasis_weights.torch_to_flax(sd),
                                  {'params': e_p, 'batch_stats': e_s},
                                  'G.pth')

  def test_missing_file_is_a_clear_error(self):
    with self.assertRaisesRegex(FileNotFoundError, 'nope.pth: no such'):
      oasis_weights.load_state_dict('nope.pth')


@absltest.skipUnless(_TINY_SQUARE.is_dir(),
                     f'parity fixture {_TINY_SQUARE} is absent')
class ConvertCliTest(absltest.TestCase):

  def test_cli_writes_an_inference_checkpoint_of_the_official_weights(self):
    out = self.create_tempdir().full_path + '/converted'
    cmd = [sys.executable, '-m', 'oasis_jax.convert_torch',
           '--config=configs/default.py',
           f'--generator={_TINY_SQUARE}/G_step.npz',
           f'--ema={_TINY_SQUARE}/EMA_step.npz',
           f'--discriminator={_TINY_SQUARE}/D_step.npz', f'--out={out}']
    cmd += [f'--config.{k}={v}' for k, v in _OVERRIDES.items()]
    env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
    res = subprocess.run(cmd, cwd=_REPO, capture_output=True, text=True,
                         env=env, timeout=300)
    self.assertEqual(res.returncode, 0, res.stderr[-3000:])
    self.assertIn('generator: ema, with discriminator', res.stdout)
    config, variables, manifest = export_format.load_inference(out)
    self.assertEqual(manifest['generator'], 'ema')
    self.assertEqual(config.discriminator.channels, (8, 8, 16, 16, 32, 32))
    want = oasis_weights.torch_to_flax(
        dict(np.load(_TINY_SQUARE / 'EMA_step.npz')))
    jax.tree.map(np.testing.assert_array_equal, variables['generator'], want)
    want_d = oasis_weights.torch_to_flax(
        dict(np.load(_TINY_SQUARE / 'D_step.npz')))
    jax.tree.map(np.testing.assert_array_equal, variables['discriminator'],
                 want_d)
    self.assertEqual(json.loads(
        pathlib.Path(out, 'config.json').read_text())['data']['num_classes'],
                     12)

  def test_cli_rejects_weights_of_another_model(self):
    out = self.create_tempdir().full_path + '/converted'
    cmd = [sys.executable, '-m', 'oasis_jax.convert_torch',
           '--config=configs/default.py',
           f'--generator={_TINY_SQUARE}/G_init.npz', f'--out={out}']
    res = subprocess.run(cmd, cwd=_REPO, capture_output=True, text=True,
                         timeout=300)
    self.assertNotEqual(res.returncode, 0)
    self.assertIn('G_init.npz does not fit the model of the config',
                  res.stderr)
    self.assertFalse(os.path.exists(out))


if __name__ == '__main__':
  absltest.main()
