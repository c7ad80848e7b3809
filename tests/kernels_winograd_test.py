"""winograd_conv3x3 (kernels/winograd.py) equals XLA's 'same' convolution."""

from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from oasis_jax.kernels import winograd
from oasis_jax.models import layers

# Shared across tests: one trace per shape / band height / epilogue.
_winograd = jax.jit(winograd.winograd_conv3x3,
                    static_argnames=('band_rows', 'epilogue'))
_xla_conv = jax.jit(layers.conv2d)


def _assert_close(got, want, rtol=1e-5):
  """Elementwise, to rtol of the largest reference value."""
  want = np.asarray(want)
  np.testing.assert_allclose(got, want, rtol=rtol,
                             atol=rtol * float(np.abs(want).max()))


def _normal(seed, shape):
  return jax.random.normal(jax.random.PRNGKey(seed), shape)


def _force_winograd():
  """Patches the Winograd thresholds so any 3x3 conv map qualifies."""
  return mock.patch.multiple(winograd, _WINOGRAD_MIN_PIXELS=1,
                             _WINOGRAD_MIN_FEATURES=1)


class WinogradConvTest(parameterized.TestCase):
  """winograd_conv3x3 equals XLA's 'same' convolution."""

  @parameterized.named_parameters(
      ('one_band', (1, 8, 8, 3), 5, 8),
      ('h_not_multiple_of_band', (1, 11, 8, 3), 5, 8),
      ('w_not_multiple_of_tile', (1, 6, 7, 3), 5, 3),
      ('batch_two_uneven', (2, 7, 10, 4), 6, 3),
      ('one_row_bands', (2, 5, 5, 2), 3, 1),
      ('one_pixel', (1, 1, 1, 3), 4, 8),
      ('one_pixel_batch_two', (2, 1, 1, 3), 4, 1),
      ('one_column', (1, 9, 1, 2), 3, 3))
  def test_matches_xla_conv(self, shape, features, band_rows):
    x = _normal(0, shape)
    k = _normal(1, (3, 3, shape[-1], features))
    got = _winograd(x, k, band_rows=band_rows)
    self.assertEqual(got.shape, shape[:3] + (features,))
    _assert_close(got, _xla_conv(x, k))

  def test_gradients_match_xla_conv(self):
    x = _normal(0, (2, 7, 6, 3))
    k = _normal(1, (3, 3, 3, 4))
    g = _normal(2, (2, 7, 6, 4))
    grads = {}
    for name, f in (('winograd', lambda x, k: winograd.winograd_conv3x3(
        x, k, band_rows=3)), ('xla', layers.conv2d)):
      loss = lambda x, k, f=f: jnp.sum(f(x, k) * g)
      grads[name] = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, k)
    for got, want in zip(grads['winograd'], grads['xla']):
      _assert_close(got, want, rtol=2e-5)

  def test_non_3x3_kernel_is_an_error(self):
    with self.assertRaisesRegex(ValueError, '3x3'):
      winograd.winograd_conv3x3(jnp.ones((1, 4, 4, 2)), jnp.ones((5, 5, 2, 2)))
    with self.assertRaisesRegex(ValueError, '3x3'):
      winograd.winograd_conv3x3(jnp.ones((1, 4, 4, 2)), jnp.ones((1, 1, 2, 2)))

  @parameterized.parameters(2, 8)
  def test_epilogue_equals_unfused_computation(self, band_rows):
    x = _normal(0, (2, 5, 7, 3))
    k = _normal(1, (3, 3, 3, 4))
    a = _normal(2, (2, 5, 7, 2))
    epilogue = _scale_by_first_channel_plus_one
    got = _winograd(x, k, band_rows=band_rows, epilogue=epilogue,
                    operands=(a,))
    want = _xla_conv(x, k) * a[..., :1] + 1
    _assert_close(got, want)

  def test_epilogue_with_two_operands_can_change_channels(self):
    x = _normal(0, (1, 6, 5, 2))
    k = _normal(1, (3, 3, 2, 4))
    a, b = _normal(2, (1, 6, 5, 4)), _normal(3, (1, 6, 5, 3))
    got = _winograd(x, k, band_rows=4, epilogue=_mix, operands=(a, b))
    want = _mix(_xla_conv(x, k), a, b)
    self.assertEqual(got.shape, (1, 6, 5, 3))
    _assert_close(got, want)


def _scale_by_first_channel_plus_one(y, a):
  return y * a[..., :1] + 1


def _mix(y, a, b):
  return (y * a)[..., :3] - b


class UsesWinogradTest(parameterized.TestCase):

  def test_large_float32_cpu_conv_qualifies(self):
    self.assertTrue(winograd.uses_winograd((1, 32, 32, 128), 128, jnp.float32))

  @parameterized.named_parameters(
      ('bfloat16', (1, 32, 32, 128), 128, jnp.bfloat16),
      ('float64', (1, 32, 32, 128), 128, np.float64),
      ('few_features', (1, 32, 32, 128), 64, jnp.float32),
      ('small_map', (1, 16, 16, 128), 128, jnp.float32))
  def test_does_not_qualify(self, shape, features, dtype):
    self.assertFalse(winograd.uses_winograd(shape, features, dtype))

  def test_thresholds_are_read_at_call_time(self):
    with _force_winograd():
      self.assertTrue(winograd.uses_winograd((1, 2, 2, 1), 1, jnp.float32))


if __name__ == '__main__':
  absltest.main()
