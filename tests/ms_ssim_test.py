"""Tests of ms_ssim.py against a float64 reference."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from oasis_jax.evaluation import ms_ssim


def _ssim_reference(x, y, max_val):
  """Single-scale mean SSIM and CS in float64 (valid Gaussian filtering)."""
  g = np.exp(-(np.arange(11) - 5.0)**2 / (2 * 1.5**2))
  g /= g.sum()

  def blur(a):  # a: [H, W, C]
    a = np.lib.stride_tricks.sliding_window_view(a, 11, axis=0) @ g
    return np.lib.stride_tricks.sliding_window_view(a, 11, axis=1) @ g

  c1, c2 = (0.01 * max_val)**2, (0.03 * max_val)**2
  mx, my = blur(x), blur(y)
  vx, vy = blur(x * x) - mx**2, blur(y * y) - my**2
  cxy = blur(x * y) - mx * my
  cs = (2 * cxy + c2) / (vx + vy + c2)
  return ((2 * mx * my + c1) / (mx**2 + my**2 + c1) * cs).mean(), cs.mean()


def _ms_ssim_reference(x, y, max_val=2.0):
  x, y = x.astype(np.float64), y.astype(np.float64)
  weights = ms_ssim.MS_SSIM_WEIGHTS
  value = 1.0
  for level, weight in enumerate(weights):
    ssim, cs = _ssim_reference(x, y, max_val)
    if level == len(weights) - 1:
      value *= max(ssim, 0)**weight
    else:
      value *= max(cs, 0)**weight
      h, w, c = x.shape  # Even sizes: 2x2 means.
      x = x.reshape(h // 2, 2, w // 2, 2, c).mean((1, 3))
      y = y.reshape(h // 2, 2, w // 2, 2, c).mean((1, 3))
  return value


def _smooth_images(rng, n, size=176):
  """Blurry random images in [-1, 1] (so that every scale has structure)."""
  coarse = rng.uniform(-1, 1, size=(n, size // 8, size // 8, 3))
  return np.repeat(np.repeat(coarse, 8, 1), 8, 2).astype(np.float32)


class MsSsimTest(parameterized.TestCase):

  def test_equal_images_give_one(self):
    x = _smooth_images(np.random.default_rng(0), 2)
    np.testing.assert_allclose(ms_ssim.ms_ssim(x, x), [1.0, 1.0], atol=1e-6)

  @parameterized.parameters((0.05, 0.0), (0.3, 0.0), (0.1, 0.8))
  def test_matches_float64_reference(self, noise, mix):
    rng = np.random.default_rng(1)
    x = _smooth_images(rng, 2)
    y = (1 - mix) * x + mix * _smooth_images(rng, 2)  # Mix in other images.
    y = np.clip(y + rng.normal(scale=noise, size=x.shape), -1, 1).astype(
        np.float32)
    ours = np.asarray(ms_ssim.ms_ssim(x, y))
    reference = [_ms_ssim_reference(x[i], y[i]) for i in range(2)]
    np.testing.assert_allclose(ours, reference, atol=2e-5)
    self.assertAlmostEqual(float(ms_ssim.ms_ssim(y[0], x[0])), ours[0],
                           places=5)  # Symmetric; unbatched input.

  def test_more_noise_means_lower_ms_ssim(self):
    rng = np.random.default_rng(2)
    x = _smooth_images(rng, 1)
    values = [
        float(ms_ssim.ms_ssim(x, np.clip(x + rng.normal(scale=s, size=x.shape),
                                         -1, 1))[0]) for s in (0.02, 0.2, 0.8)
    ]
    self.assertGreater(values[0], values[1])
    self.assertGreater(values[1], values[2])
    self.assertLess(values[0], 1.0)

  def test_small_images_are_an_error(self):
    with self.assertRaisesRegex(ValueError, '161'):
      ms_ssim.ms_ssim(np.zeros((1, 64, 64, 3)), np.zeros((1, 64, 64, 3)))

  def test_mean_pairwise_ms_ssim(self):
    rng = np.random.default_rng(3)
    images = _smooth_images(rng, 3)
    expected = np.mean(ms_ssim.ms_ssim(images[[0, 0, 1]], images[[1, 2, 2]]))
    self.assertAlmostEqual(ms_ssim.mean_pairwise_ms_ssim(images, batch_size=2),
                           expected, places=6)
    same = np.repeat(images[:1], 3, axis=0)
    self.assertAlmostEqual(ms_ssim.mean_pairwise_ms_ssim(same), 1.0, places=5)
    with self.assertRaisesRegex(ValueError, 'at least 2'):
      ms_ssim.mean_pairwise_ms_ssim(images[:1])


if __name__ == '__main__':
  absltest.main()
