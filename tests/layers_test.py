"""Tests of the shared layers: nearest resizing, spectral norm, param-free norms."""

from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from oasis_jax.models import layers


class NearestResizeTest(parameterized.TestCase):

  def test_downsample_takes_top_left_pixel_of_each_cell(self):
    x = jnp.arange(64 * 64, dtype=jnp.float32).reshape(1, 64, 64, 1)
    y = layers.nearest_resize(x, (2, 2))
    # Rows and columns 0 and 32 (PyTorch), not 16 and 48 (half-pixel).
    np.testing.assert_array_equal(
        y[0, :, :, 0], [[0, 32], [32 * 64, 32 * 64 + 32]])

  def test_non_square_keeps_height_and_width_apart(self):
    x = jnp.arange(8 * 16, dtype=jnp.float32).reshape(1, 8, 16, 1)
    y = layers.nearest_resize(x, (2, 4))
    np.testing.assert_array_equal(
        y[0, :, :, 0], [[0, 4, 8, 12], [64, 68, 72, 76]])

  def test_non_integer_factor_uses_floor_indexing(self):
    x = jnp.arange(5, dtype=jnp.float32).reshape(1, 1, 5, 1)
    y = layers.nearest_resize(x, (1, 3))
    # floor(dst * 5 / 3) = 0, 1, 3.
    np.testing.assert_array_equal(y[0, 0, :, 0], [0, 1, 3])

  def test_upsample_repeats_pixels(self):
    x = jnp.array([[1., 2.], [3., 4.]]).reshape(1, 2, 2, 1)
    np.testing.assert_array_equal(
        layers.upsample2x(x)[0, :, :, 0],
        [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])
    np.testing.assert_array_equal(layers.nearest_resize(x, (4, 4)),
                                  layers.upsample2x(x))

  def test_avg_pool(self):
    x = jnp.arange(16, dtype=jnp.float32).reshape(1, 4, 4, 1)
    np.testing.assert_allclose(layers.avg_pool2x(x)[0, :, :, 0],
                               [[2.5, 4.5], [10.5, 12.5]])


class SpectralNormTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.conv = layers.Conv(6, 3, spectral_norm=True)
    self.x = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 5, 4))
    self.variables = self.conv.init(jax.random.PRNGKey(0), self.x,
                                    train=False)

  def _w_mat(self):
    k = self.variables['params']['kernel']
    return np.asarray(k).transpose(3, 2, 0, 1).reshape(6, -1)

  def test_state_shapes_follow_pytorch_layout(self):
    stats = self.variables['batch_stats']
    self.assertEqual(stats['u'].shape, (6,))
    self.assertEqual(stats['v'].shape, (4 * 3 * 3,))
    np.testing.assert_allclose(np.linalg.norm(stats['u']), 1.0, rtol=1e-6)

  def test_power_iteration_converges_to_largest_singular_value(self):
    variables = self.variables
    apply = jax.jit(lambda v: self.conv.apply(v, self.x, train=True,
                                              mutable=['batch_stats']))
    for _ in range(100):
      _, mutated = apply(variables)
      variables = {**variables, **mutated}
    u, v = variables['batch_stats']['u'], variables['batch_stats']['v']
    w = self._w_mat()
    sigma = float(u @ w @ v)
    np.testing.assert_allclose(sigma, np.linalg.svd(w, compute_uv=False)[0],
                               rtol=1e-5)
    # The normalized kernel has unit spectral norm: compare with a plain conv.
    y = self.conv.apply(variables, self.x, train=False)
    plain = jax.lax.conv_general_dilated(
        self.x, variables['params']['kernel'] / sigma, (1, 1), 'SAME',
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    np.testing.assert_allclose(y, plain + variables['params']['bias'],
                               rtol=1e-4, atol=1e-6)

  def test_one_train_forward_is_one_power_iteration(self):
    w = self._w_mat()
    u0 = np.asarray(self.variables['batch_stats']['u'])
    _, mutated = self.conv.apply(self.variables, self.x, train=True,
                                 mutable=['batch_stats'])
    v1 = w.T @ u0
    v1 /= np.linalg.norm(v1)
    u1 = w @ v1
    u1 /= np.linalg.norm(u1)
    np.testing.assert_allclose(mutated['batch_stats']['v'], v1, rtol=1e-5)
    np.testing.assert_allclose(mutated['batch_stats']['u'], u1, rtol=1e-5)

  def test_eval_uses_stored_vectors_without_iterating(self):
    stats = {'u': jnp.ones(6) / np.sqrt(6), 'v': jnp.ones(36) / 6.0}
    variables = {'params': self.variables['params'], 'batch_stats': stats}
    y, mutated = self.conv.apply(variables, self.x, train=False,
                                 mutable=['batch_stats'])
    np.testing.assert_array_equal(mutated['batch_stats']['u'], stats['u'])
    sigma = float(np.asarray(stats['u']) @ self._w_mat()
                  @ np.asarray(stats['v']))
    plain = jax.lax.conv_general_dilated(
        self.x, self.variables['params']['kernel'] / sigma, (1, 1), 'SAME',
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    np.testing.assert_allclose(y, plain, rtol=1e-4, atol=1e-6)

  def test_gradient_flows_through_sigma_not_vectors(self):
    def loss(params):
      y, _ = self.conv.apply({'params': params,
                              'batch_stats': self.variables['batch_stats']},
                             self.x, train=True, mutable=['batch_stats'])
      return jnp.sum(y**2)
    g = jax.grad(loss)(self.variables['params'])
    self.assertTrue(np.isfinite(np.asarray(g['kernel'])).all())
    # Scaling the raw kernel leaves W / sigma unchanged: zero radial gradient.
    k = self.variables['params']['kernel']
    np.testing.assert_allclose(float(jnp.sum(g['kernel'] * k)), 0.0,
                               atol=1e-4 * float(jnp.abs(g['kernel']).sum()))


class LabelConvTest(parameterized.TestCase):
  """The gather formulations equal a conv over the materialized one-hot."""

  # A per-image z goes into per-image tables on maps of at least
  # 3 * 3 * (7 + 1) = 72 pixels (hw 9x9), and is broadcast on smaller ones.
  @parameterized.product(mode=['gather', 'gather_matmul'],
                         per_pixel_z=[False, True], sequential=[True, False],
                         hw=[(6, 5), (9, 9)])
  def test_modes_agree_with_dense_conv_forward_and_gradient(
      self, mode, per_pixel_z, sequential, hw):
    label = jax.random.randint(jax.random.PRNGKey(0), (2,) + hw, 0, 7)
    z = jax.random.normal(jax.random.PRNGKey(1), (2, 3))
    if per_pixel_z:
      z = jax.random.normal(jax.random.PRNGKey(2), (2,) + hw + (3,))
    dense = layers.LabelConv(4, 7, 3, mode='dense')
    fast = layers.LabelConv(4, 7, 3, mode=mode, sequential=sequential)
    v = dense.init(jax.random.PRNGKey(3), label, z)
    v = jax.tree.map(lambda x: x + 0.1, v)  # Non-zero bias too.
    g = jax.random.normal(jax.random.PRNGKey(4), (2,) + hw + (4,))
    out = {}
    for name, m in (('dense', dense), ('fast', fast)):
      f = lambda p, m=m: jnp.sum(m.apply({'params': p}, label, z) * g)
      out[name] = (m.apply(v, label, z), jax.grad(f)(v['params']))
    np.testing.assert_allclose(out['fast'][0], out['dense'][0], rtol=1e-5,
                               atol=1e-5)
    for a, b in zip(jax.tree.leaves(out['fast'][1]),
                    jax.tree.leaves(out['dense'][1])):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

  def test_unknown_mode_is_an_error(self):
    with self.assertRaisesRegex(ValueError, 'perf.label_conv'):
      layers.resolve_label_conv_mode('sparse')


class Conv2dTest(parameterized.TestCase):
  """The CPU formulations equal XLA's convolution, forward and gradients."""

  @parameterized.named_parameters(
      ('small_map_im2col', (2, 4, 3, 5), 3),     # H*W <= 64: one matmul.
      ('large_map_banded', (2, 50, 47, 3), 3),   # B*H*W > 4096: bands.
      ('mid_map_plain', (1, 20, 20, 3), 3),      # Neither: XLA's conv.
      ('one_by_one', (2, 9, 7, 5), 1))
  def test_cpu_impl_matches_xla(self, shape, k):
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    kernel = jax.random.normal(jax.random.PRNGKey(1), (k, k, shape[-1], 4))
    g = jax.random.normal(jax.random.PRNGKey(2), shape[:3] + (4,))
    out = {}
    for impl in ('xla', 'cpu'):
      f = lambda x, w, impl=impl: jnp.sum(layers.conv2d(x, w, impl) * g)
      out[impl] = (layers.conv2d(x, kernel, impl),
                   jax.grad(f, argnums=(0, 1))(x, kernel))
    np.testing.assert_allclose(out['cpu'][0], out['xla'][0], rtol=1e-5,
                               atol=1e-4)
    for a, b in zip(out['cpu'][1], out['xla'][1]):
      np.testing.assert_allclose(a, b, rtol=1e-4,
                                 atol=1e-5 * float(jnp.abs(b).max()))

  @parameterized.parameters(1, 7, 13, 10_000)
  def test_banded_kernel_gradient_any_band_height(self, band_pixels):
    # Bands of 1 row, uneven bands (47 = 3*13 + 8 rows) and one band.
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 47, 11, 3))
    g = jax.random.normal(jax.random.PRNGKey(1), (2, 47, 11, 5))
    k0 = jnp.zeros((3, 3, 3, 5))
    want = jax.vjp(lambda w: layers.conv2d(x, w, 'xla'), k0)[1](g)[0]
    got = layers.conv_kernel_grad(x, g, (3, 3),
                                   band_pixels=band_pixels * 11)
    np.testing.assert_allclose(got, want, rtol=1e-4,
                               atol=1e-5 * float(jnp.abs(want).max()))

  @parameterized.product(
      impl=['xla', 'cpu'],
      shape_k=[((2, 5, 7, 3), 3),      # Phases on small maps: im2col.
               ((2, 40, 36, 3), 3),    # Phases with banded gradients.
               ((2, 5, 7, 3), 1)])     # 1x1: conv, then upsample.
  def test_upsample_conv_matches_conv_of_upsampled(self, impl, shape_k):
    shape, k = shape_k
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    kernel = jax.random.normal(jax.random.PRNGKey(1), (k, k, shape[-1], 4))
    g = jax.random.normal(jax.random.PRNGKey(2),
                          (shape[0], 2 * shape[1], 2 * shape[2], 4))
    ref = lambda x, w: layers.conv2d(layers.upsample2x(x), w, 'xla')
    fast = lambda x, w: layers.upsample_conv2d(x, w, impl)
    out = {}
    for name, f in (('ref', ref), ('fast', fast)):
      loss = lambda x, w, f=f: jnp.sum(f(x, w) * g)
      out[name] = (f(x, kernel), jax.grad(loss, argnums=(0, 1))(x, kernel))
    np.testing.assert_allclose(out['fast'][0], out['ref'][0], rtol=1e-5,
                               atol=1e-4)
    for a, b in zip(out['fast'][1], out['ref'][1]):
      np.testing.assert_allclose(a, b, rtol=1e-4,
                                 atol=1e-5 * float(jnp.abs(b).max()))

  def test_unknown_impl_is_an_error(self):
    with self.assertRaisesRegex(ValueError, 'perf.conv_impl'):
      layers.conv2d(jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 2)), 'fast')


class BigArrayFormsTest(parameterized.TestCase):
  """The memory-saving forms for big arrays equal the one-call forms."""

  def _both(self, fn):
    out = {}
    for name, threshold in (('big', 1), ('small', 2**62)):
      with mock.patch.object(layers, '_BIG_ARRAY', threshold):
        out[name] = fn()
    return out

  @parameterized.parameters(False, True)
  def test_grouped_spectral_norm_conv(self, upsample):
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 5, 4, 3))
    conv = layers.Conv(4, 3, spectral_norm=True, groups=3, upsample=upsample)
    v = conv.init(jax.random.PRNGKey(1), x, train=False)
    g = jax.random.normal(jax.random.PRNGKey(2),
                          conv.apply(v, x, train=False).shape)

    def run():
      def loss(params):
        y, stats = conv.apply({**v, 'params': params}, x, train=True,
                              mutable=['batch_stats'])
        return jnp.sum(y * g), (y, stats)
      (_, (y, stats)), grads = jax.value_and_grad(loss, has_aux=True)(
          v['params'])
      return y, stats, grads

    out = self._both(run)
    for a, b in zip(jax.tree.leaves(out['big']), jax.tree.leaves(out['small'])):
      np.testing.assert_allclose(a, b, rtol=1e-5,
                                 atol=1e-5 * float(jnp.abs(b).max()))

  def test_label_conv_scan(self):
    label = jax.random.randint(jax.random.PRNGKey(0), (2, 6, 5), 0, 7)
    z = jax.random.normal(jax.random.PRNGKey(1), (2, 3))
    conv = layers.LabelConv(4, 7, 3, mode='gather')
    v = conv.init(jax.random.PRNGKey(2), label, z)
    g = jax.random.normal(jax.random.PRNGKey(3), (2, 6, 5, 4))
    f = lambda p: jnp.sum(conv.apply({'params': p}, label, z) * g)
    out = self._both(lambda: (conv.apply(v, label, z),
                              jax.grad(f)(v['params'])))
    for a, b in zip(jax.tree.leaves(out['big']), jax.tree.leaves(out['small'])):
      np.testing.assert_allclose(a, b, rtol=1e-5,
                                 atol=1e-5 * float(jnp.abs(b).max()))


class ParamFreeNormTest(parameterized.TestCase):

  def test_batch_norm_train_statistics_and_running_update(self):
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 5, 2)) * 3 + 1
    norm = layers.ParamFreeNorm('batch')
    variables = norm.init(jax.random.PRNGKey(0), x, train=False)
    y, mutated = norm.apply(variables, x, train=True, mutable=['batch_stats'])
    xn = np.asarray(x, np.float64)
    mean, var = xn.mean((0, 1, 2)), xn.var((0, 1, 2))
    np.testing.assert_allclose(y, (xn - mean) / np.sqrt(var + 1e-5),
                               rtol=1e-4, atol=1e-5)
    n = 3 * 4 * 5
    np.testing.assert_allclose(mutated['batch_stats']['mean'], 0.1 * mean,
                               rtol=1e-5)
    np.testing.assert_allclose(mutated['batch_stats']['var'],
                               0.9 + 0.1 * var * n / (n - 1), rtol=1e-5)

  def test_batch_norm_eval_uses_running_statistics(self):
    x = jnp.full((1, 2, 2, 1), 3.0)
    variables = {'batch_stats': {'mean': jnp.array([1.0]),
                                 'var': jnp.array([4.0])}}
    y = layers.ParamFreeNorm('batch').apply(variables, x, train=False)
    np.testing.assert_allclose(y, 2 / np.sqrt(4 + 1e-5), rtol=1e-6)

  def test_instance_norm_is_per_image_and_stateless(self):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 3))
    norm = layers.ParamFreeNorm('instance')
    variables = norm.init(jax.random.PRNGKey(0), x, train=True)
    self.assertEmpty(variables)
    y_train = norm.apply({}, x, train=True)
    np.testing.assert_array_equal(y_train, norm.apply({}, x, train=False))
    np.testing.assert_allclose(y_train.mean(axis=(1, 2)), 0, atol=1e-6)
    # Each image is normalized on its own.
    np.testing.assert_allclose(norm.apply({}, x[:1], train=True), y_train[:1],
                               rtol=1e-5)

  def test_unknown_kind_is_an_error(self):
    with self.assertRaisesRegex(ValueError, "'batch' or 'instance'"):
      layers.ParamFreeNorm('group').init(jax.random.PRNGKey(0),
                                         jnp.ones((1, 2, 2, 1)), train=True)


if __name__ == '__main__':
  absltest.main()
