"""Tests of the paper's layers: resizing, spectral norm, norms, label conv."""

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
  """The reference label conv is a conv of the materialized [z | one-hot]."""

  @parameterized.parameters(False, True)
  def test_equals_conv_of_concatenated_noise_and_one_hot(self, per_pixel_z):
    label = jax.random.randint(jax.random.PRNGKey(0), (2, 6, 5), 0, 7)
    z = jax.random.normal(jax.random.PRNGKey(1), (2, 3))
    if per_pixel_z:
      z = jax.random.normal(jax.random.PRNGKey(2), (2, 6, 5, 3))
    conv = layers.LabelConv(4, 7, 3)
    v = jax.tree.map(lambda x: x + 0.1,
                     conv.init(jax.random.PRNGKey(3), label, z, train=False))
    zz = z if per_pixel_z else jnp.broadcast_to(z[:, None, None],
                                                (2, 6, 5, 3))
    seg = np.concatenate([zz, np.eye(7)[np.asarray(label)]], axis=-1)
    want = jax.lax.conv_general_dilated(
        jnp.asarray(seg, jnp.float32), v['params']['kernel'], (1, 1), 'SAME',
        dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + v['params']['bias']
    np.testing.assert_allclose(conv.apply(v, label, z, train=True), want,
                               rtol=1e-5, atol=1e-6)


def _unit(seed, n):
  v = jax.random.normal(jax.random.PRNGKey(seed), (n,))
  return v / jnp.linalg.norm(v)


class SpectralConvTest(parameterized.TestCase):
  """The reference formulations of Conv: x (or upsample2x(x)) convolved
  with W / sigma."""

  @parameterized.parameters(False, True)
  def test_normalized_kernel_and_upsampling(self, upsample):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 5, 2))
    kernel = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 2, 3))
    u, v = _unit(2, 3), _unit(12, 18)
    f = layers.upsample_spectral_conv if upsample else layers.spectral_conv
    y = f(x, kernel, [(u, v)], train=True, dtype=jnp.float32)
    w = np.asarray(kernel, np.float64).transpose(3, 2, 0, 1).reshape(3, -1)
    sigma = float(np.asarray(u) @ w @ np.asarray(v))
    xx = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2) if upsample else x
    want = layers.conv2d(jnp.asarray(xx), kernel / sigma)
    self.assertEqual(y.shape, (2, 6, 10, 3) if upsample else (2, 3, 5, 3))
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


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
