"""Tests of LPIPS (AlexNet) against a torch reference, with random weights."""

import os
import tempfile
from unittest import mock

from absl.testing import absltest
import ml_collections
import numpy as np

from oasis_jax.evaluation import lpips
from oasis_jax.pretrained import lpips_weights
from oasis_jax.runtime import sharding
from oasis_jax.evaluation import diversity

try:
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
except ImportError:  # pragma: no cover
  torch = None

_NO_TORCH = 'torch is not importable: no .pth route and no torch reference.'


def random_state(seed: int = 0) -> dict[str, np.ndarray]:
  """A state dict under the real key names, random weights (He-like)."""
  rng = np.random.default_rng(seed)
  state, in_ch = {}, 3
  for k, (idx, ch, ksize, _, _) in enumerate(lpips_weights.CONVS):
    fan_in = in_ch * ksize * ksize
    state[f'features.{idx}.weight'] = (rng.standard_normal(
        (ch, in_ch, ksize, ksize)) * np.sqrt(2 / fan_in)).astype(np.float32)
    state[f'features.{idx}.bias'] = (
        0.1 * rng.standard_normal(ch)).astype(np.float32)
    state[f'lin{k}.model.1.weight'] = rng.uniform(
        0, 1, (1, ch, 1, 1)).astype(np.float32)
    in_ch = ch
  return state


def torch_reference(state, img0, img1) -> np.ndarray:
  """LPIPS as the lpips package computes it, NCHW with torch ops."""
  t = lambda a: torch.from_numpy(np.asarray(a, np.float32))
  shift = torch.tensor(lpips.SHIFT)[None, :, None, None]
  scale = torch.tensor(lpips.SCALE)[None, :, None, None]

  def taps(img):
    x = (t(img).permute(0, 3, 1, 2) - shift) / scale
    out = []
    for k, (idx, _, _, stride, pad) in enumerate(lpips_weights.CONVS):
      if k in (1, 2):
        x = F.max_pool2d(x, kernel_size=3, stride=2)
      x = F.relu(F.conv2d(x, t(state[f'features.{idx}.weight']),
                          t(state[f'features.{idx}.bias']),
                          stride=stride, padding=pad))
      out.append(x)
    return out

  def norm(x):
    return x / (torch.sqrt(torch.sum(x**2, dim=1, keepdim=True)) + 1e-10)

  with torch.no_grad():
    total = 0
    for k, (f0, f1) in enumerate(zip(taps(img0), taps(img1))):
      d = F.conv2d((norm(f0) - norm(f1))**2, t(state[f'lin{k}.model.1.weight']))
      total = total + d.mean(dim=(2, 3), keepdim=True)
  return total.reshape(-1).double().numpy()


class LpipsTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.state = random_state()
    cls.npz = os.path.join(cls.tmp, 'lpips_alex.npz')
    np.savez(cls.npz, **cls.state)
    cls.metric = lpips.load_lpips(cls.npz)
    rng = np.random.default_rng(1)
    cls.images = rng.uniform(-1, 1, (3, 64, 64, 3)).astype(np.float32)

  def test_matches_torch_reference(self):
    if torch is None:
      self.skipTest(_NO_TORCH)
    img0, img1 = self.images[:2], self.images[[2, 0]]
    got = self.metric(img0, img1)
    want = torch_reference(self.state, img0, img1)
    self.assertEqual(got.shape, (2,))
    self.assertTrue(np.all(want > 0))
    np.testing.assert_allclose(got, want, rtol=1e-5)

  def test_identical_images_give_zero(self):
    got = self.metric(self.images[:2], self.images[:2])
    np.testing.assert_array_equal(got, np.zeros(2, np.float32))

  def test_npz_and_pth_agree(self):
    if torch is None:
      self.skipTest(_NO_TORCH)
    pth = os.path.join(self.tmp, 'lpips_alex.pth')
    torch.save({k: torch.from_numpy(v) for k, v in self.state.items()}, pth)
    from_pth = lpips.load_lpips(pth)
    img0, img1 = self.images[:2], self.images[1:]
    np.testing.assert_array_equal(from_pth(img0, img1),
                                  self.metric(img0, img1))

  def test_merge_weights(self):
    alexnet = {k: v for k, v in self.state.items() if k.startswith('feat')}
    alexnet['classifier.1.weight'] = np.zeros((4, 4), np.float32)
    lins = {k: v for k, v in self.state.items() if k.startswith('lin')}
    merged = lpips_weights.merge_weights(alexnet, lins)
    self.assertCountEqual(merged, lpips_weights.STATE_KEYS)
    with self.assertRaisesRegex(lpips_weights.LpipsWeightsError, 'lin4'):
      lpips_weights.merge_weights(alexnet, {})

  def test_missing_file(self):
    path = os.path.join(self.tmp, 'nope.npz')
    with self.assertRaisesRegex(lpips_weights.MissingLpipsWeightsError,
                                r"nope\.npz.*config\.eval\.lpips_weights"):
      lpips.load_lpips(path)
    with self.assertRaisesRegex(FileNotFoundError, 'lpips_weights'):
      lpips.load_lpips('')

  def test_wrong_shape(self):
    bad = dict(self.state)
    bad['lin2.model.1.weight'] = np.zeros((1, 3, 1, 1), np.float32)
    path = os.path.join(self.tmp, 'bad.npz')
    np.savez(path, **bad)
    with self.assertRaisesRegex(lpips_weights.LpipsWeightsError, 'lin2'):
      lpips.load_lpips(path)

  def test_mean_pairwise(self):
    a, b, c = self.images
    pairs = self.metric(np.stack([a, a, b]), np.stack([b, c, c]))
    got = self.metric.mean_pairwise_lpips(self.images)
    np.testing.assert_allclose(got, np.mean(pairs), rtol=1e-6)
    # Batches smaller than the number of pairs (padded last batch).
    np.testing.assert_allclose(
        self.metric.mean_pairwise_lpips(self.images, batch_size=2),
        np.mean(pairs), rtol=1e-6)
    with self.assertRaises(ValueError):
      self.metric.mean_pairwise_lpips(self.images[:1])

  def test_diversity_reports_lpips_when_configured(self):
    num_maps, num_samples = 2, 3
    rng = np.random.default_rng(2)
    table = rng.uniform(-1, 1, (num_maps * num_samples, 64, 64, 3)).astype(
        np.float32)

    def fake_generate_fn(config, mesh, stream):
      del config, mesh, stream
      return lambda variables, label, ids: table[np.maximum(ids, 0)]

    def fake_batches(config, mesh, bs, n):
      del config, mesh, n
      yield {'label': np.zeros((bs, 64, 64), np.int32),
             'valid': np.ones((bs,), bool)}

    config = ml_collections.ConfigDict(
        {'eval': {'batch_size': 4, 'lpips_weights': ''}})
    mesh = sharding.make_mesh(1)
    with mock.patch.object(diversity.input_pipeline, 'num_examples',
                           return_value=num_maps), \
         mock.patch.object(diversity.common, 'eval_batches', fake_batches), \
         mock.patch.object(diversity.common, 'make_generate_fn',
                           fake_generate_fn), \
         mock.patch.object(diversity.ms_ssim, 'mean_pairwise_ms_ssim',
                           return_value=0.5):
      off = diversity.diversity(config, mesh, {}, num_maps, num_samples)
      config.eval.lpips_weights = self.npz
      on = diversity.diversity(config, mesh, {}, num_maps, num_samples)
    self.assertNotIn('diversity_lpips', off)
    want = np.mean([self.metric.mean_pairwise_lpips(table[i:i + num_samples])
                    for i in range(0, num_maps * num_samples, num_samples)])
    self.assertAlmostEqual(on['diversity_lpips'], want, places=6)
    self.assertEqual(on['diversity_ms_ssim'], 0.5)


if __name__ == '__main__':
  absltest.main()
