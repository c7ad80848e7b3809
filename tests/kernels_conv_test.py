"""The CPU conv formulations (kernels/conv.py) equal the reference layers."""

from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from oasis_jax.kernels import conv
from oasis_jax.kernels import fused_forwards
from oasis_jax.kernels import winograd
from oasis_jax.models import layers


def _normal(seed, shape):
  return jax.random.normal(jax.random.PRNGKey(seed), shape)


def _assert_close(got, want, rtol=1e-5):
  """Elementwise, to rtol of the largest reference value."""
  want = np.asarray(want)
  np.testing.assert_allclose(got, want, rtol=rtol,
                             atol=rtol * float(np.abs(want).max()))


def _force_winograd():
  """Patches the Winograd thresholds so any 3x3 conv map qualifies."""
  return mock.patch.multiple(winograd, _WINOGRAD_MIN_PIXELS=1,
                             _WINOGRAD_MIN_FEATURES=1)


class Conv2dTest(parameterized.TestCase):
  """conv.conv2d equals XLA's convolution, forward and gradients."""

  @parameterized.named_parameters(
      ('small_map_im2col', (2, 4, 3, 5), 3),     # H*W <= 64: one matmul.
      ('large_map_banded', (2, 50, 47, 3), 3),   # B*H*W > 4096: bands.
      ('mid_map_plain', (1, 20, 20, 3), 3),      # Neither: XLA's conv.
      ('one_by_one', (2, 9, 7, 5), 1))
  def test_matches_reference(self, shape, k):
    x = _normal(0, shape)
    kernel = _normal(1, (k, k, shape[-1], 4))
    g = _normal(2, shape[:3] + (4,))
    out = {}
    for name, f in (('ref', layers.conv2d), ('cpu', conv.conv2d)):
      loss = lambda x, w, f=f: jnp.sum(f(x, w) * g)
      out[name] = (f(x, kernel), jax.grad(loss, argnums=(0, 1))(x, kernel))
    np.testing.assert_allclose(out['cpu'][0], out['ref'][0], rtol=1e-5,
                               atol=1e-4)
    for a, b in zip(out['cpu'][1], out['ref'][1]):
      np.testing.assert_allclose(a, b, rtol=1e-4,
                                 atol=1e-5 * float(jnp.abs(b).max()))

  @parameterized.parameters(1, 7, 13, 10_000)
  def test_banded_kernel_gradient_any_band_height(self, band_pixels):
    # Bands of 1 row, uneven bands (47 = 3*13 + 8 rows) and one band.
    x = _normal(0, (2, 47, 11, 3))
    g = _normal(1, (2, 47, 11, 5))
    k0 = jnp.zeros((3, 3, 3, 5))
    want = jax.vjp(lambda w: layers.conv2d(x, w), k0)[1](g)[0]
    got = conv.conv_kernel_grad(x, g, (3, 3), band_pixels=band_pixels * 11)
    np.testing.assert_allclose(got, want, rtol=1e-4,
                               atol=1e-5 * float(jnp.abs(want).max()))

  @parameterized.parameters(((2, 5, 7, 3), 3),      # Phases: im2col.
                            ((2, 40, 36, 3), 3),    # Phases, banded grads.
                            ((2, 5, 7, 3), 1))      # 1x1: conv, upsample.
  def test_upsample_conv_matches_conv_of_upsampled(self, shape, k):
    x = _normal(0, shape)
    kernel = _normal(1, (k, k, shape[-1], 4))
    g = _normal(2, (shape[0], 2 * shape[1], 2 * shape[2], 4))
    ref = lambda x, w: layers.conv2d(layers.upsample2x(x), w)
    out = {}
    for name, f in (('ref', ref), ('fast', conv.upsample_conv2d)):
      loss = lambda x, w, f=f: jnp.sum(f(x, w) * g)
      out[name] = (f(x, kernel), jax.grad(loss, argnums=(0, 1))(x, kernel))
    np.testing.assert_allclose(out['fast'][0], out['ref'][0], rtol=1e-5,
                               atol=1e-4)
    for a, b in zip(out['fast'][1], out['ref'][1]):
      np.testing.assert_allclose(a, b, rtol=1e-4,
                                 atol=1e-5 * float(jnp.abs(b).max()))

  def test_inference_conv2d_takes_winograd_and_matches_reference(self):
    x = _normal(0, (1, 32, 32, 8))
    k = _normal(1, (3, 3, 8, 128)) * 0.1
    with mock.patch.object(winograd, 'winograd_conv3x3',
                           wraps=winograd.winograd_conv3x3) as spy:
      got = conv.conv2d(x, k, inference=True)
      self.assertEqual(spy.call_count, 1)
      conv.conv2d(x, k)  # Not in differentiated forwards.
      self.assertEqual(spy.call_count, 1)
    _assert_close(got, layers.conv2d(x, k))

  def test_inference_conv2d_skips_winograd_for_1x1(self):
    x = _normal(0, (1, 4, 4, 2))
    k = _normal(1, (1, 1, 2, 3))
    with _force_winograd(), mock.patch.object(
        winograd, 'winograd_conv3x3', wraps=winograd.winograd_conv3x3) as spy:
      got = conv.conv2d(x, k, inference=True)
    spy.assert_not_called()
    _assert_close(got, layers.conv2d(x, k))

  @parameterized.named_parameters(
      # Wide input, 512 pixels in the batch, few outputs: XLA's conv when
      # only a forward is needed, the im2col matmul in training.
      ('fwd_mid_batch', (2, 16, 16, 512), 8, True, False),
      ('train_mid_batch', (2, 16, 16, 512), 8, False, True),
      ('fwd_small_batch', (1, 16, 16, 512), 8, True, True),
      ('fwd_wide_output', (2, 16, 16, 512), 1024, True, True))
  def test_wide_input_im2col_choice(self, shape, features, inference,
                                    im2col):
    x = _normal(0, shape)
    k = _normal(1, (3, 3, shape[-1], features)) * 0.05
    matmul_conv = conv._im2col_conv  # pylint: disable=protected-access
    with mock.patch.object(conv, '_im2col_conv', wraps=matmul_conv) as spy:
      got = conv.conv2d(x, k, inference=inference)
    self.assertEqual(spy.called, im2col)
    _assert_close(got, layers.conv2d(x, k))


class Conv2dWithRowTest(parameterized.TestCase):
  """conv2d_with_row = (conv2d, row @ kernel), the row inside the matmul
  where the conv is one."""

  @parameterized.named_parameters(
      ('small_map_im2col', (2, 4, 3, 5), 3, True),
      ('one_by_one', (2, 5, 4, 6), 1, False),
      ('mid_map_xla_conv', (1, 20, 20, 3), 3, False))
  def test_matches_conv_and_matrix_product(self, shape, k, in_matmul):
    x = _normal(0, shape)
    kernel = _normal(1, (k, k, shape[-1], 7))
    row = _normal(2, (k * k * shape[-1],))
    forward = conv._im2col_conv_forward  # pylint: disable=protected-access
    with mock.patch.object(conv, '_im2col_conv_forward',
                           wraps=forward) as spy:
      y, product = conv.conv2d_with_row(x, kernel, row)
    self.assertEqual(
        any(c.args[3:] and c.args[3] is not None for c in spy.call_args_list),
        in_matmul)
    _assert_close(y, layers.conv2d(x, kernel))
    want = np.asarray(row, np.float64) @ np.asarray(
        kernel, np.float64).reshape(-1, 7)
    np.testing.assert_allclose(product, want, rtol=1e-5,
                               atol=1e-5 * np.abs(want).max())

  def test_winograd_conv_keeps_its_path(self):
    x = _normal(0, (1, 8, 8, 4))
    kernel = _normal(1, (3, 3, 4, 4))
    row = _normal(2, (36,))
    with _force_winograd(), mock.patch.object(
        winograd, 'winograd_conv3x3', wraps=winograd.winograd_conv3x3) as spy:
      y, product = conv.conv2d_with_row(x, kernel, row)
    spy.assert_called_once()
    _assert_close(y, layers.conv2d(x, kernel))
    _assert_close(product, row @ kernel.reshape(-1, 4))


def _unit(seed, n):
  v = _normal(seed, (n,))
  return v / jnp.linalg.norm(v)


class SpectralConvTest(parameterized.TestCase):
  """conv.spectral_conv equals layers.spectral_conv, forward and gradients,
  on both sides of its divide-output rule and of _BIG_ARRAY."""

  @parameterized.named_parameters(
      # (shape, features, groups, train, upsample, big)
      ('eval_output_smaller_than_kernel', (1, 2, 2, 64), 32, 1, False,
       False, False),
      ('train_output_smaller_than_kernel', (1, 2, 2, 64), 32, 1, True,
       False, False),
      ('eval_output_larger_than_kernel', (2, 8, 8, 3), 4, 1, False, False,
       False),
      ('train_upsampled', (2, 3, 2, 8), 5, 1, True, True, False),
      ('eval_upsampled', (2, 3, 2, 8), 5, 1, False, True, False),
      ('groups_one_batched_conv', (6, 5, 4, 3), 4, 3, True, False, False),
      ('groups_big_outputs', (6, 5, 4, 3), 4, 3, True, False, True),
      ('groups_upsampled_big', (6, 3, 2, 3), 4, 3, True, True, True))
  def test_matches_reference(self, shape, features, groups, train, upsample,
                             big):
    x = _normal(0, shape)
    kernel = _normal(1, (3, 3, shape[-1], features)) * 0.2
    vectors = [(_unit(2 + i, features), _unit(20 + i, 9 * shape[-1]))
               for i in range(groups)]
    # The reference takes one forward's vectors; PerChunk applies it to
    # each chunk (consecutive forwards), as the fused D forwards do.
    ref = fused_forwards.PerChunk(layers.upsample_spectral_conv if upsample
                                  else layers.spectral_conv)
    cpu = conv.upsample_spectral_conv if upsample else conv.spectral_conv
    g = _normal(3, ref(x, kernel, vectors, train=train,
                       dtype=jnp.float32).shape)
    out = {}
    for name, f in (('ref', ref), ('cpu', cpu)):
      run = lambda x, k, f=f: f(x, k, vectors, train=train,
                                dtype=jnp.float32)
      loss = lambda x, k, run=run: jnp.sum(run(x, k) * g)
      with mock.patch.object(conv, '_BIG_ARRAY', 1 if big else 2**62):
        out[name] = (run(x, kernel),
                     jax.grad(loss, argnums=(0, 1))(x, kernel))
    _assert_close(out['cpu'][0], out['ref'][0], rtol=2e-5)
    for a, b in zip(out['cpu'][1], out['ref'][1]):
      _assert_close(a, b, rtol=1e-4)

  def test_without_spectral_norm_is_the_plain_conv(self):
    x = _normal(0, (2, 5, 4, 3))
    kernel = _normal(1, (3, 3, 3, 4))
    got = conv.spectral_conv(x, kernel, None, train=False,
                             dtype=jnp.float32)
    _assert_close(got, layers.conv2d(x, kernel))

  def test_float64_is_computed_in_float64(self):
    with jax.enable_x64(True):
      x = _normal(0, (1, 2, 2, 64)).astype(jnp.float64)
      kernel = _normal(1, (3, 3, 64, 8)).astype(jnp.float64) * 0.1
      vectors = [(_unit(2, 8).astype(jnp.float64),
                  _unit(3, 576).astype(jnp.float64))]
      got = conv.spectral_conv(x, kernel, vectors, train=False,
                               dtype=jnp.float64)
      want = layers.spectral_conv(x, kernel, vectors, train=False,
                                  dtype=jnp.float64)
      self.assertEqual(got.dtype, jnp.float64)
      np.testing.assert_allclose(got, want, rtol=1e-12,
                                 atol=1e-12 * float(jnp.abs(want).max()))


if __name__ == '__main__':
  absltest.main()
