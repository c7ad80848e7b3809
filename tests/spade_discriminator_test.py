"""Parity of the SPADE discriminator and its losses with the official code.

Every fixture folder of kind 'spade_d' under ../shared/parity/ablations/ and
the folders listed in OASIS_ABLATION_FIXTURES (colon-separated) is rebuilt
from its meta.json alone and compared at the tolerances it states.
"""

import json
import os
import re
import shutil

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

import ablation_fixtures as fixtures
from configs import tiny
from oasis_jax.training import losses
from oasis_jax import models
from oasis_jax.models import spade_discriminator

_KEY = re.compile(r'discriminator_(\d+)\.model(\d+)\.(?:0\.)?0\.'
                  r'(weight|bias|weight_orig|weight_u|weight_v)$')


def torch_to_variables(state):
  """D_init.npz (PyTorch names, OIHW) -> {'params', 'batch_stats'}."""
  params, stats = {}, {}
  for key, value in state.items():
    match = _KEY.match(key)
    if match is None:
      raise KeyError(f'unexpected parameter {key}')
    scale, group, kind = match.groups()
    where = (f'discriminator_{scale}', f'model{group}')
    value = np.asarray(value, np.float32)
    if kind in ('weight', 'weight_orig'):
      target, name, value = params, 'kernel', value.transpose(2, 3, 1, 0)
    elif kind == 'bias':
      target, name = params, 'bias'
    else:
      target, name = stats, kind[-1]  # 'u' or 'v' (OIHW order, as stored).
    target.setdefault(where[0], {}).setdefault(where[1], {})[name] = value
  return {'params': params, 'batch_stats': stats}


def _grad_to_torch(grads, key):
  match = _KEY.match(key)
  scale, group, kind = match.groups()
  leaf = grads[f'discriminator_{scale}'][f'model{group}']
  if kind == 'bias':
    return np.asarray(leaf['bias'])
  return np.asarray(leaf['kernel']).transpose(3, 2, 0, 1)


def run_fixture(directory: str) -> dict[str, np.ndarray]:
  """Everything the fixture holds, computed by the port (PyTorch layouts)."""
  with open(os.path.join(directory, 'meta.json')) as f:
    meta = json.load(f)
  opts = meta['key_options']
  n_classes = int(meta['classes']['one_hot_channels_N'])
  num_d, n_layers = int(opts['num_D']), int(opts['n_layers_D'])
  lambda_feat = float(opts['lambda_feat'])
  disc = spade_discriminator.SpadeDiscriminator(
      num_classes=n_classes, num_scales=num_d, num_layers=n_layers,
      base_channels=int(opts['ndf']))
  inputs = fixtures.load(os.path.join(directory, 'inputs.npz'))
  init = fixtures.load(os.path.join(directory, 'D_init.npz'))
  variables = torch_to_variables(init)
  label = jnp.asarray(inputs['label'], jnp.int32)
  fake, real = fixtures.nhwc(inputs['fake']), fixtures.nhwc(inputs['real'])
  b = fake.shape[0]
  x = jnp.concatenate([fake, real])
  labels = jnp.concatenate([label, label])

  def forward(params, fake_image):
    outputs, mutated = disc.apply(
        {'params': params, 'batch_stats': variables['batch_stats']},
        jnp.concatenate([fake_image, real]), labels, train=True,
        mutable=['batch_stats'])
    fake_out = [[o[:b] for o in s] for s in outputs]
    real_out = [[o[b:] for o in s] for s in outputs]
    return outputs, fake_out, real_out, mutated['batch_stats']

  def loss_d(params):
    _, fo, ro, _ = forward(params, fake)
    lf, lr = losses.hinge_d_loss([o[-1] for o in fo], [o[-1] for o in ro])
    return lf + lr

  def loss_g_parts(fake_image):
    _, fo, ro, _ = forward(variables['params'], fake_image)
    adv = losses.hinge_g_loss([o[-1] for o in fo])
    feat = lambda_feat * losses.feature_matching_loss(
        [o[:-1] for o in fo], [o[:-1] for o in ro])
    return adv, feat

  with jax.default_matmul_precision('highest'):
    outputs, fo, ro, stats = forward(variables['params'], fake)
    lf, lr = losses.hinge_d_loss([o[-1] for o in fo], [o[-1] for o in ro])
    adv, feat = loss_g_parts(fake)
    terms = losses.feature_matching_terms([o[:-1] for o in fo],
                                          [o[:-1] for o in ro])
    grad_d = jax.grad(loss_d)(variables['params'])
    grads_fake = {
        'grad_fake_loss_G': jax.grad(lambda f: sum(loss_g_parts(f)))(fake),
        'grad_fake_loss_G_adv': jax.grad(lambda f: loss_g_parts(f)[0])(fake),
        'grad_fake_loss_G_feat': jax.grad(lambda f: loss_g_parts(f)[1])(fake)}

  one_hot = jax.nn.one_hot(label, n_classes)
  d_in = jnp.concatenate([jnp.concatenate([one_hot, one_hot]), x], axis=-1)
  out = {'one_hot': fixtures.nchw(one_hot)}
  for i in range(num_d):
    if i > 0:
      d_in = spade_discriminator.avg_pool3x3_s2_exclude_pad(d_in)
    out[f'D_input_s{i}'] = fixtures.nchw(d_in)
    for j in range(n_layers + 1):
      out[f'feat_fake_s{i}_l{j}'] = fixtures.nchw(fo[i][j])
      out[f'feat_real_s{i}_l{j}'] = fixtures.nchw(ro[i][j])
  del outputs
  out.update(feat_l1_terms=np.asarray(terms), loss_D_fake=np.asarray(lf),
             loss_D_real=np.asarray(lr), loss_D=np.asarray(lf + lr),
             loss_G_adv=np.asarray(adv), loss_G_feat=np.asarray(feat),
             loss_G_feat_raw=np.asarray(feat / lambda_feat),
             loss_G=np.asarray(adv + feat))
  for key in init:
    if not key.endswith(('weight_u', 'weight_v')):
      out[f'gradD.{key}'] = _grad_to_torch(grad_d, key)
  out.update({k: fixtures.nchw(v) for k, v in grads_fake.items()})
  # Spectral-norm state after the call, and the normalized weight it used.
  for key in init:
    if not key.endswith('weight_orig'):
      continue
    module = key[:-len('.weight_orig')]
    scale, group, _ = _KEY.match(key).groups()
    leaf = stats[f'discriminator_{scale}'][f'model{group}']
    u, v = np.asarray(leaf['u']), np.asarray(leaf['v'])
    w = np.asarray(init[key], np.float32)
    sigma = u @ (w.reshape(w.shape[0], -1) @ v)
    out[f'after.{module}.weight_u'] = u
    out[f'after.{module}.weight_v'] = v
    out[f'after.{module}.weight'] = w / sigma
  return out


def compare(directory: str, port: dict[str, np.ndarray]) -> dict[str, str]:
  """Arrays that fail the fixture's tolerance: name -> 'err > tol'.

  err = max|port - ref| / scale; scale = max|ref| of the array, for gradD.*
  the largest over all gradD arrays (meta.json's tolerance rule). Every
  array the fixture's tolerance table names must be compared.
  """
  refs = {}
  for name in ('inputs', 'outputs'):
    refs.update(fixtures.load(os.path.join(directory, f'{name}.npz')))
  buffers = fixtures.load(os.path.join(directory, 'D_after_fwd_buffers.npz'))
  refs.update({f'after.{key}': value for key, value in buffers.items()})
  grad_scale = max(float(np.max(np.abs(v))) for k, v in refs.items()
                   if k.startswith('gradD.'))
  return fixtures.failures(
      fixtures.tolerances(directory), refs, port,
      lambda name, ref: grad_scale if name.startswith('gradD.') else None)


_DIRS = fixtures.fixture_dirs('spade_d')


class SpadeDiscriminatorParityTest(parameterized.TestCase):

  def test_fixtures_are_found(self):
    fixtures.require_dirs(_DIRS, 'spade_d')

  @parameterized.named_parameters(
      *fixtures.parameters(_DIRS))
  def test_port_matches_official_fixture(self, directory):
    fixtures.require_dirs(_DIRS, 'spade_d')
    failures = compare(directory, run_fixture(directory))
    self.assertEmpty(failures, f'{directory}: {failures}')

  def test_perturbed_fixture_fails(self):
    fixtures.require_dirs(_DIRS, 'spade_d')
    src = min(_DIRS, key=lambda d: os.path.getsize(
        os.path.join(d, 'D_init.npz')))
    dst = self.create_tempdir().full_path
    for name in os.listdir(src):
      shutil.copy(os.path.join(src, name), dst)
    outputs = fixtures.load(os.path.join(dst, 'outputs.npz'))
    feat = outputs['feat_fake_s1_l1'].copy()
    flat = feat.reshape(-1)
    flat[np.argmax(np.abs(flat))] *= 1.001  # 1e-3 of the scale.
    outputs['feat_fake_s1_l1'] = feat
    os.chmod(os.path.join(dst, 'outputs.npz'), 0o644)
    np.savez(os.path.join(dst, 'outputs.npz'), **outputs)
    failures = compare(dst, run_fixture(dst))
    self.assertEqual(list(failures), ['feat_fake_s1_l1'])


class SpadeDiscriminatorTest(parameterized.TestCase):

  def test_avg_pool_excludes_padding_from_the_divisor(self):
    x = jnp.arange(25, dtype=jnp.float32).reshape(1, 5, 5, 1)
    pooled = np.asarray(spade_discriminator.avg_pool3x3_s2_exclude_pad(x))
    self.assertEqual(pooled.shape, (1, 3, 3, 1))
    # Corner: rows/cols 0..1 -> (0 + 1 + 5 + 6) / 4; centre: a full window.
    self.assertAlmostEqual(pooled[0, 0, 0, 0], 3.0)
    self.assertAlmostEqual(pooled[0, 1, 1, 0], 12.0)
    # Odd size: the last window covers rows/cols 3..4 only.
    self.assertAlmostEqual(pooled[0, 2, 2, 0], (18 + 19 + 23 + 24) / 4)

  def test_output_sizes_follow_padding_two_and_strides(self):
    disc = spade_discriminator.SpadeDiscriminator(
        num_classes=3, num_scales=2, num_layers=4, base_channels=4)
    image, label = jnp.zeros((1, 64, 48, 3)), jnp.zeros((1, 64, 48), jnp.int32)
    variables = disc.init(jax.random.PRNGKey(0), image, label, train=False)
    outputs = disc.apply(variables, image, label, train=False)
    self.assertEqual([o.shape[1:] for o in outputs[0]],
                     [(33, 25, 4), (17, 13, 8), (9, 7, 16), (10, 8, 32),
                      (11, 9, 1)])
    self.assertEqual(outputs[1][0].shape[1:3], (17, 13))
    # Only the first and logit convs have a bias; the others are SN convs.
    p = variables['params']['discriminator_0']
    self.assertIn('bias', p['model0'])
    self.assertNotIn('bias', p['model1'])
    self.assertIn('u', variables['batch_stats']['discriminator_0']['model1'])

  def test_hinge_terms_clip_and_generator_term_is_linear(self):
    fake = [jnp.array([-2.0, 0.5]), jnp.array([0.0, 0.0])]
    real = [jnp.array([2.0, 0.5]), jnp.array([-1.0, 1.0])]
    lf, lr = losses.hinge_d_loss(fake, real)
    self.assertAlmostEqual(float(lf), ((0 + 1.5) / 2 + 1.0) / 2)
    self.assertAlmostEqual(float(lr), ((0 + 0.5) / 2 + (2 + 0) / 2) / 2)
    self.assertAlmostEqual(float(losses.hinge_g_loss(fake)), (0.75 + 0) / 2)

  def test_feature_matching_sums_layers_and_averages_scales(self):
    fake = [[jnp.ones((1, 2)), jnp.zeros((1, 2))],
            [jnp.array([[3.0, 1.0]]), jnp.ones((1, 2))]]
    real = [[jnp.zeros((1, 2)), jnp.ones((1, 2))],
            [jnp.ones((1, 2)), jnp.ones((1, 2))]]
    self.assertAlmostEqual(
        float(losses.feature_matching_loss(fake, real)), ((1 + 1) + 1) / 2)

  @parameterized.parameters('use_labelmix', 'use_class_balancing')
  def test_oasis_only_losses_are_refused_with_spade(self, key):
    config = tiny.get_config()
    config.discriminator.kind = 'spade'
    config.loss.use_labelmix = config.loss.use_class_balancing = False
    setattr(config.loss, key, True)
    with self.assertRaisesRegex(ValueError, f'config.loss.{key}=True'):
      models.make_discriminator(config)

  def test_unknown_kind_is_refused(self):
    config = tiny.get_config()
    config.discriminator.kind = 'patch'
    with self.assertRaisesRegex(ValueError, 'config.discriminator.kind'):
      models.make_discriminator(config)


if __name__ == '__main__':
  absltest.main()
