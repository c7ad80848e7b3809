"""The eval-mode SPADE block (kernels/spade_eval.py) equals the reference."""

from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import flax
import jax
import jax.numpy as jnp
import numpy as np

from oasis_jax.kernels import conv
from oasis_jax.kernels import label_conv
from oasis_jax.kernels import spade_eval
from oasis_jax.kernels import winograd
from oasis_jax.models import model_config
from oasis_jax.models import spade

FAST = model_config.Formulations(
    conv=conv.spectral_conv, label_conv=label_conv.GatherLabelConv(),
    res_block=spade_eval.FusedEvalResBlock)


def _assert_close(got, want, rtol=1e-5):
  want = np.asarray(want)
  np.testing.assert_allclose(got, want, rtol=rtol,
                             atol=rtol * float(np.abs(want).max()))


def _normal(seed, shape):
  return jax.random.normal(jax.random.PRNGKey(seed), shape)


def _force_winograd():
  """Patches the Winograd thresholds so any 3x3 conv map qualifies."""
  return mock.patch.multiple(winograd, _WINOGRAD_MIN_PIXELS=1,
                             _WINOGRAD_MIN_FEATURES=1)


def _config(z_dim, norm='batch', formulations=model_config.REFERENCE):
  return model_config.GeneratorConfig(
      num_classes=5, z_dim=max(z_dim, 1), use_3d_noise=z_dim > 0,
      spade_hidden=6, norm=norm, formulations=formulations)


def _w_mat(kernel):
  """[out, in*kh*kw] in PyTorch's OIHW order."""
  kernel = np.asarray(kernel, np.float64)
  return kernel.transpose(3, 2, 0, 1).reshape(kernel.shape[-1], -1)


def _np_normalize(x):
  return x / max(np.linalg.norm(x), 1e-12)


def _randomize(variables, seed):
  """Perturbed params, random running stats, converged spectral-norm pairs."""
  rng = np.random.default_rng(seed)
  params = jax.tree.map(
      lambda p: p + 0.1 * rng.standard_normal(p.shape).astype(np.float32),
      flax.core.unfreeze(variables['params']))
  flat_params = flax.traverse_util.flatten_dict(params)
  stats = {}
  for path, value in flax.traverse_util.flatten_dict(
      flax.core.unfreeze(variables.get('batch_stats', {}))).items():
    if path[-1] == 'mean':
      value = 0.1 * rng.standard_normal(value.shape)
    elif path[-1] == 'var':
      value = rng.uniform(0.5, 1.5, value.shape)
    else:  # Spectral norm: the top singular pair, so sigma is not tiny.
      u, _, vt = np.linalg.svd(_w_mat(flat_params[path[:-1] + ('kernel',)]))
      value = u[:, 0] if path[-1] == 'u' else vt[0]
    stats[path] = jnp.asarray(value, jnp.float32)
  out = {'params': params}
  if stats:
    out['batch_stats'] = flax.traverse_util.unflatten_dict(stats)
  return out


class SpadeTest(parameterized.TestCase):
  """spade_eval.spade equals the reference SPADE (eval mode)."""

  def _inputs(self, b=2, h=11, w=7, c=4, z='image', label_scale=1):
    x = _normal(10, (b, h, w, c))
    label = jax.random.randint(jax.random.PRNGKey(11),
                               (b, h * label_scale, w * label_scale), 0, 5)
    if z == 'image':
      z = _normal(12, (b, 3))
    elif z == 'pixel':
      z = _normal(12, (b, h * label_scale, w * label_scale, 3))
    else:
      z = None
    return x, label, z

  def _spade(self, z, norm, formulations, c=4):
    return spade.SPADE(_config(0 if z is None else 3, norm, formulations), c,
                       train=False)

  def _variables(self, module, x, label, z):
    init = module.clone(train=True)
    return _randomize(jax.jit(init.init)(jax.random.PRNGKey(0), x, label, z),
                      0)

  @parameterized.product(norm=['batch', 'instance'],
                         z=['none', 'image', 'pixel'],
                         gather=[True, False])
  def test_fused_spade(self, norm, z, gather):
    x, label, z = self._inputs(z=z, label_scale=2)
    fast = FAST if gather else model_config.Formulations(
        conv=conv.spectral_conv, res_block=spade_eval.FusedEvalResBlock)
    ref = self._spade(z, norm, model_config.REFERENCE)
    v = self._variables(ref, x, label, z)
    want = jax.jit(lambda v: ref.apply(v, x, label, z))(v)
    with _force_winograd(), mock.patch.object(
        winograd, 'winograd_conv3x3',
        wraps=winograd.winograd_conv3x3) as spy, mock.patch.object(
            label_conv, 'label_conv_rows',
            wraps=label_conv.label_conv_rows) as rows:
      got = jax.jit(lambda v: self._spade(z, norm, fast).apply(
          v, x, label, z, method=spade_eval.spade))(v)
    self.assertGreater(spy.call_count, 0)  # It took the Winograd path.
    self.assertEqual(rows.call_count > 0,
                     gather and (z is None or z.ndim == 2))
    self.assertGreater(float(jnp.std(want)), 1e-2)
    _assert_close(got, want, rtol=2e-5)

  @parameterized.product(norm=['batch', 'instance'], fused=[True, False])
  def test_projection_folds_the_shortcut_conv(self, norm, fused):
    x, label, z = self._inputs()
    project = _normal(13, (4, 3))
    ref = self._spade(z, norm, model_config.REFERENCE)
    v = self._variables(ref, x, label, z)
    want = jnp.einsum('bhwc,co->bhwo', ref.apply(v, x, label, z), project,
                      precision='highest')
    thresholds = _force_winograd() if fused else mock.patch.object(
        winograd, '_WINOGRAD_MIN_PIXELS', 2**30)
    with thresholds, mock.patch.object(
        winograd, 'winograd_conv3x3', wraps=winograd.winograd_conv3x3) as spy:
      got = jax.jit(lambda v: self._spade(z, norm, FAST).apply(
          v, x, label, z, project, method=spade_eval.spade))(v)
    self.assertEqual(spy.called, fused)
    _assert_close(got, want, rtol=2e-5)


class ResBlockTest(parameterized.TestCase):
  """FusedEvalResBlock in eval mode equals the reference block."""

  def _compare(self, fin, fout, norm, z, x_hw=(11, 7)):
    x = _normal(10, (2,) + x_hw + (fin,))
    label = jax.random.randint(jax.random.PRNGKey(11), (2,) + x_hw, 0, 5)
    z_arr = {'image': _normal(12, (2, 3)),
             'pixel': _normal(12, (2,) + x_hw + (3,)), 'none': None}[z]
    z_dim = 0 if z == 'none' else 3
    make = lambda f: (f.res_block or spade.SPADEResBlock)(
        _config(z_dim, norm, f), fin, fout, train=False)
    ref = make(model_config.REFERENCE)
    v = _randomize(jax.jit(ref.clone(train=True).init)(
        jax.random.PRNGKey(0), x, label, z_arr), 0)
    want = jax.jit(lambda v: ref.apply(v, x, label, z_arr))(v)
    modulate = spade_eval._modulate  # pylint: disable=protected-access
    with _force_winograd(), mock.patch.object(
        spade_eval, '_modulate', wraps=modulate) as mod:
      got, mutated = jax.jit(lambda v: make(FAST).apply(
          v, x, label, z_arr, mutable=['batch_stats']))(v)
    self.assertEqual(got.shape, x.shape[:3] + (fout,))
    self.assertGreater(float(jnp.std(want)), 1e-2)
    _assert_close(got, want, rtol=2e-5)
    # Eval mode leaves the state alone.
    for a, b in zip(jax.tree.leaves(mutated.get('batch_stats', {})),
                    jax.tree.leaves(v.get('batch_stats', {}))):
      np.testing.assert_array_equal(a, b)
    return any(c.args[3] is not None for c in mod.call_args_list)

  @parameterized.named_parameters(
      ('narrowing_batch_z_image', 4, 3, 'batch', 'image'),
      ('narrowing_instance_z_pixel', 4, 3, 'instance', 'pixel'),
      ('same_width_batch_z_pixel', 4, 4, 'batch', 'pixel'),
      ('same_width_instance_no_z', 4, 4, 'instance', 'none'),
      ('narrowing_batch_no_z', 4, 2, 'batch', 'none'),
      # A widening block keeps its plain shortcut in eval mode (no power
      # iteration of conv_s: once a bug ran it with train=True).
      ('widening', 2, 4, 'batch', 'image'))
  def test_equals_reference(self, fin, fout, norm, z):
    self._compare(fin, fout, norm, z)

  @parameterized.named_parameters(('large_map', (4, 3), True),
                                  ('small_map', (1, 1), False))
  def test_folds_the_shortcut_only_where_it_pays(self, x_hw, folds):
    # fin=4 -> fout=2: the fold pays for more than 4 * 2 / 2 = 4 pixels.
    self.assertEqual(spade_eval.folds_shortcut((2,) + x_hw + (4,), 2), folds)
    self.assertEqual(self._compare(4, 2, 'batch', 'image', x_hw), folds)


if __name__ == '__main__':
  absltest.main()
