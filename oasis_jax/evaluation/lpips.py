"""LPIPS (Zhang et al. 2018), AlexNet variant, in Flax: a diversity metric.

The Learned Perceptual Image Patch Similarity of the `lpips` package with
`net='alex', version='0.1'`:

* images in [-1, 1] go through the ScalingLayer, (x - shift) / scale per RGB
  channel with shift = (-.030, -.088, -.188), scale = (.458, .448, .450);
* torchvision AlexNet `features`, tapped after each of its 5 ReLUs
  (64, 192, 384, 256, 256 channels);
* per tap: unit-normalize over channels (x / (||x|| + 1e-10)), squared
  difference of the two images, a learned 1x1 conv to 1 channel without bias
  (`lin`), spatial mean; LPIPS is the sum over the 5 taps.

Layout is NHWC. Weights are never downloaded: they come from one file given by
path (`config.eval.lpips_weights`; pretrained/lpips_weights.py says which
keys it holds and how to assemble it from the published files).

Usage: `metric = load_lpips(path)`; `metric(img0, img1)` -> [B] distances;
`metric.mean_pairwise_lpips(images)` -> mean over all pairs (diversity of
images generated from one label map; higher: more diverse).
"""

from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from oasis_jax.pretrained import lpips_weights

SHIFT = (-.030, -.088, -.188)
SCALE = (.458, .448, .450)
EPS = 1e-10


def _normalize(x):
  return x / (jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True)) + EPS)


class LpipsAlexNet(nn.Module):
  """LPIPS distance of two NHWC image batches in [-1, 1] -> [B]."""

  def features(self, x) -> list[jax.Array]:
    x = (x - jnp.asarray(SHIFT, x.dtype)) / jnp.asarray(SCALE, x.dtype)
    taps = []
    for k, (_, ch, ksize, stride, pad) in enumerate(lpips_weights.CONVS):
      if k in (1, 2):  # MaxPool2d(3, 2) before conv 1 and conv 2.
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='VALID')
      x = nn.Conv(ch, (ksize, ksize), strides=(stride, stride),
                  padding=((pad, pad), (pad, pad)),
                  precision=jax.lax.Precision.HIGHEST, name=f'conv{k}')(x)
      x = nn.relu(x)
      taps.append(x)
    return taps

  @nn.compact
  def __call__(self, img0, img1):
    n = img0.shape[0]
    taps = self.features(jnp.concatenate([img0, img1], axis=0))
    total = jnp.zeros((n,), img0.dtype)
    for k, tap in enumerate(taps):
      diff = jnp.square(_normalize(tap[:n]) - _normalize(tap[n:]))
      d = nn.Conv(1, (1, 1), use_bias=False,
                  precision=jax.lax.Precision.HIGHEST, name=f'lin{k}')(diff)
      total = total + jnp.mean(d, axis=(1, 2, 3))
    return total


def state_dict_to_params(state: Mapping[str, np.ndarray]) -> dict:
  """Flax params of LpipsAlexNet from the (torch layout) state dict."""
  params = {}
  for k, (idx, *_) in enumerate(lpips_weights.CONVS):
    params[f'conv{k}'] = {
        'kernel': jnp.asarray(
            np.transpose(state[f'features.{idx}.weight'], (2, 3, 1, 0))),
        'bias': jnp.asarray(state[f'features.{idx}.bias'])}
    params[f'lin{k}'] = {
        'kernel': jnp.asarray(
            np.transpose(state[lpips_weights.LIN_KEYS[k]], (2, 3, 1, 0)))}
  return {'params': params}


@jax.jit
def _distance(variables, img0, img1):
  return LpipsAlexNet().apply(variables, img0, img1)


class LPIPS:
  """LPIPS (AlexNet, v0.1) with fixed weights."""

  def __init__(self, variables):
    self.variables = variables

  def __call__(self, img0, img1) -> np.ndarray:
    """[B] distances of two [B, H, W, 3] batches in [-1, 1]."""
    img0 = jnp.asarray(img0, jnp.float32)
    img1 = jnp.asarray(img1, jnp.float32)
    if img0.shape != img1.shape or img0.ndim != 4 or img0.shape[-1] != 3:
      raise ValueError(f'LPIPS needs two [B, H, W, 3] batches of one shape, '
                       f'got {img0.shape} and {img1.shape}.')
    return np.asarray(_distance(self.variables, img0, img1))

  def mean_pairwise_lpips(self, images, batch_size: int = 32) -> float:
    """Mean LPIPS over the N (N - 1) / 2 pairs of [N, H, W, 3] images."""
    images = np.asarray(images, np.float32)
    n = images.shape[0]
    if n < 2:
      raise ValueError(f'mean_pairwise_lpips needs >= 2 images, got {n}.')
    rows, cols = np.triu_indices(n, k=1)
    bs = min(batch_size, rows.size)
    values = []
    for start in range(0, rows.size, bs):
      r, c = rows[start:start + bs], cols[start:start + bs]
      count = r.size
      if count < bs:  # Pad to one shape: one compilation.
        r, c = np.pad(r, (0, bs - count)), np.pad(c, (0, bs - count))
      values.append(self(images[r], images[c])[:count])
    return float(np.mean(np.concatenate(values)))


def load_lpips(path: str) -> LPIPS:
  """The LPIPS metric with the weights in `path` (see the module doc)."""
  return LPIPS(state_dict_to_params(lpips_weights.read_state_dict(path)))

