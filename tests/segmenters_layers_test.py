"""Tests of the segmenters' shared layers against PyTorch's rules in numpy."""

from absl.testing import absltest
from absl.testing import parameterized
import jax.numpy as jnp
import numpy as np

from oasis_jax.evaluation.segmenters import drn
from oasis_jax.evaluation.segmenters import layers


def _torch_linear_axis(x, axis: int, out: int, scale: float):
  """PyTorch bilinear (align_corners=False) along one axis: src =
  max(0, (dst + 0.5) scale - 0.5), taps floor(src) and min(+1, n - 1)."""
  n = x.shape[axis]
  src = np.maximum(0.0, (np.arange(out) + 0.5) * scale - 0.5)
  i0 = np.floor(src).astype(int)
  i1 = np.minimum(i0 + 1, n - 1)
  frac = (src - i0).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
  return np.take(x, i0, axis) * (1 - frac) + np.take(x, i1, axis) * frac


def _transposed_conv(logits, kernel, stride: int, padding: int):
  """A depthwise ConvTranspose2d, NHWC, by scattering every input pixel."""
  b, h, w, c = logits.shape
  k = kernel.shape[0]
  full = np.zeros((b, (h - 1) * stride + k, (w - 1) * stride + k, c))
  for i in range(h):
    for j in range(w):
      full[:, i * stride:i * stride + k, j * stride:j * stride + k] += (
          logits[:, i:i + 1, j:j + 1] * kernel[None, :, :, None])
  return full[:, padding:full.shape[1] - padding,
              padding:full.shape[2] - padding]


# Sample positions are float32 here (as in PyTorch), float64 in the numpy
# rule: up to ~1e-5 of a pixel apart on these sizes.
_POSITION_ATOL = 1e-4


class LayersTest(parameterized.TestCase):

  @parameterized.parameters((57, 83, 0.5), (57, 83, 0.75), (8, 11, 0.5),
                            (30, 7, 0.75))
  def test_rescale_is_pytorchs_scale_factor(self, h, w, p):
    x = np.random.default_rng(0).standard_normal((2, h, w, 3))
    got = np.asarray(layers.rescale_bilinear(jnp.asarray(x, jnp.float32), p))
    want = _torch_linear_axis(x, 1, int(np.floor(h * p)), 1 / p)
    want = _torch_linear_axis(want, 2, int(np.floor(w * p)), 1 / p)
    np.testing.assert_allclose(got, want, atol=_POSITION_ATOL)

  @parameterized.parameters(((4, 6), (8, 11)), ((13, 18), (49, 71)),
                            ((8, 11), (5, 3)))
  def test_resize_is_pytorchs_size(self, hw, out):
    x = np.random.default_rng(1).standard_normal((1, *hw, 2))
    got = np.asarray(layers.resize_bilinear(jnp.asarray(x, jnp.float32),
                                            *out))
    want = _torch_linear_axis(x, 1, out[0], hw[0] / out[0])
    want = _torch_linear_axis(want, 2, out[1], hw[1] / out[1])
    np.testing.assert_allclose(got, want, atol=_POSITION_ATOL)

  @parameterized.parameters((2, 3, 6), (7, 5, 3), (2, 2, 1), (13, 18, 6))
  def test_adaptive_pool_bins_overlap_like_pytorch(self, h, w, s):
    x = np.random.default_rng(2).standard_normal((1, h, w, 2))
    got = np.asarray(layers.adaptive_avg_pool(jnp.asarray(x, jnp.float32), s))
    for i in range(s):
      for j in range(s):
        rows = slice(i * h // s, -(-(i + 1) * h // s))
        cols = slice(j * w // s, -(-(j + 1) * w // s))
        np.testing.assert_allclose(got[0, i, j], x[0, rows, cols].mean((0, 1)),
                                   atol=1e-6)

  @parameterized.parameters((29, False, 15), (30, False, 15), (29, True, 15),
                            (30, True, 16), (15, True, 8), (16, True, 9))
  def test_max_pool_sizes(self, n, ceil_mode, expected):
    x = -np.abs(np.random.default_rng(3).standard_normal((1, n, n, 1)))
    got = layers.max_pool_3x3_s2(jnp.asarray(x, jnp.float32),
                                 ceil_mode=ceil_mode)
    self.assertEqual(got.shape[1:3], (expected, expected))
    self.assertTrue(np.all(np.isfinite(np.asarray(got))))  # -inf never wins.

  @parameterized.parameters((8, 11, 19), (3, 2, 5), (1, 1, 2))
  def test_drn_up_is_the_transposed_conv(self, h, w, c):
    logits = np.random.default_rng(4).standard_normal((2, h, w, c))
    got = np.asarray(drn.upsample(jnp.asarray(logits, jnp.float32)))
    k = drn.up_kernel_1d().astype(np.float64)
    want = _transposed_conv(logits, np.outer(k, k), 8, 4)
    self.assertEqual(got.shape, (2, 8 * h, 8 * w, c))
    np.testing.assert_allclose(got, want, atol=1e-5)

  def test_up_weight_is_bilinear(self):
    w = drn.up_weight(3)
    self.assertEqual(w.shape, (3, 1, 16, 16))
    np.testing.assert_allclose(w[2, 0, 7, :4], [0.0625 * 0.9375,
                                                 0.1875 * 0.9375,
                                                 0.3125 * 0.9375,
                                                 0.4375 * 0.9375])


if __name__ == '__main__':
  absltest.main()
