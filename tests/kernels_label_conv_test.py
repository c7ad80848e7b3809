"""The gather label conv (kernels/label_conv.py) equals the dense one."""

from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from oasis_jax.kernels import label_conv
from oasis_jax.kernels import winograd
from oasis_jax.models import layers


def _normal(seed, shape):
  return jax.random.normal(jax.random.PRNGKey(seed), shape)


def _assert_close(got, want, rtol=1e-5):
  want = np.asarray(want)
  np.testing.assert_allclose(got, want, rtol=rtol,
                             atol=rtol * float(np.abs(want).max()))


def _weights(z_dim, classes=7, features=4):
  kernel = _normal(3, (3, 3, z_dim + classes, features)) * 0.2
  return kernel, _normal(4, (features,)) * 0.1


class GatherLabelConvTest(parameterized.TestCase):

  # A per-image z goes into per-image tables on maps of at least
  # 3 * 3 * (7 + 1) = 72 pixels (hw 9x9), and is broadcast on smaller ones.
  @parameterized.product(matmul_grad=[False, True],
                         per_pixel_z=[False, True], train=[True, False],
                         hw=[(6, 5), (9, 9)])
  def test_equals_dense_forward_and_gradient(self, matmul_grad, per_pixel_z,
                                             train, hw):
    label = jax.random.randint(jax.random.PRNGKey(0), (2,) + hw, 0, 7)
    z = _normal(1, (2, 3))
    if per_pixel_z:
      z = _normal(2, (2,) + hw + (3,))
    kernel, bias = _weights(3)
    g = _normal(5, (2,) + hw + (4,))
    fast = label_conv.GatherLabelConv(matmul_grad)
    out = {}
    for name, f in (('dense', layers.dense_label_conv), ('fast', fast)):
      run = lambda k, b, f=f: f(k, b, label, z, train=train,
                                dtype=jnp.float32)
      loss = lambda k, b, run=run: jnp.sum(run(k, b) * g)
      out[name] = (run(kernel, bias),
                   jax.grad(loss, argnums=(0, 1))(kernel, bias))
    _assert_close(out['fast'][0], out['dense'][0])
    for a, b in zip(out['fast'][1], out['dense'][1]):
      _assert_close(a, b, rtol=1e-4)

  @parameterized.parameters(False, True)
  def test_scan_for_big_outputs_equals_unrolled(self, matmul_grad):
    label = jax.random.randint(jax.random.PRNGKey(0), (2, 6, 5), 0, 7)
    z = _normal(1, (2, 3))
    kernel, bias = _weights(3)
    g = _normal(5, (2, 6, 5, 4))
    fast = label_conv.GatherLabelConv(matmul_grad)
    run = lambda k, b: fast(k, b, label, z, train=True, dtype=jnp.float32)
    out = {}
    for name, threshold in (('scan', 1), ('unrolled', 2**62)):
      with mock.patch.object(label_conv, '_BIG_ARRAY', threshold):
        out[name] = (run(kernel, bias), jax.grad(
            lambda k, b: jnp.sum(run(k, b) * g), argnums=(0, 1))(kernel,
                                                                 bias))
    for a, b in zip(jax.tree.leaves(out['scan']),
                    jax.tree.leaves(out['unrolled'])):
      _assert_close(a, b)

  def test_float64(self):
    with jax.enable_x64(True):
      label = jax.random.randint(jax.random.PRNGKey(0), (2, 6, 5), 0, 7)
      z = _normal(1, (2, 3)).astype(jnp.float64)
      kernel, bias = (a.astype(jnp.float64) for a in _weights(3))
      run = lambda f, k: f(k, bias, label, z, train=True, dtype=jnp.float64)
      got = run(label_conv.GatherLabelConv(), kernel)
      want = run(layers.dense_label_conv, kernel)
      self.assertEqual(got.dtype, jnp.float64)
      np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
      grad = lambda f: jax.grad(lambda k: jnp.sum(run(f, k) ** 2))(kernel)
      np.testing.assert_allclose(grad(label_conv.GatherLabelConv()),
                                 grad(layers.dense_label_conv), rtol=1e-11,
                                 atol=1e-11)


class LabelConvRowsTest(parameterized.TestCase):
  """label_conv_rows gathers the band of activation(label conv)."""

  @parameterized.product(z_dim=[0, 3], band_rows=[1, 3, 8])
  def test_winograd_of_band_source_equals_conv_of_activation(
      self, z_dim, band_rows):
    label = jax.random.randint(jax.random.PRNGKey(0), (2, 5, 7), 0, 6)
    z = _normal(1, (2, z_dim)) if z_dim else None
    kernel, bias = _weights(z_dim, classes=6)
    k = _normal(6, (3, 3, 4, 5))
    tables, _ = label_conv.GatherLabelConv().tables(kernel, bias, z, 5, 7,
                                                    jnp.float32)
    self.assertEqual(tables.shape, (2 if z_dim else 1, 9, 7, 4))
    source = label_conv.label_conv_rows(tables, bias, label, jax.nn.relu)
    self.assertEqual(source.shape, (2, 5, 7, 4))
    got = winograd.winograd_conv3x3(source, k, band_rows=band_rows)
    actv = jax.nn.relu(layers.dense_label_conv(
        kernel, bias, label, z, train=False, dtype=jnp.float32))
    self.assertGreater(float(jnp.mean(actv > 0)), 0.2)  # Not all clipped.
    _assert_close(got, layers.conv2d(actv, k))


if __name__ == '__main__':
  absltest.main()
