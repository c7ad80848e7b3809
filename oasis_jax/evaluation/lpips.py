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
path (`config.eval.lpips_weights`), an `.npz` or a `.pth` (read with
`torch.load(weights_only=True)`) holding one flat state dict:

  features.{0,3,6,8,10}.weight  [O, I, kh, kw]  torchvision AlexNet convs
  features.{0,3,6,8,10}.bias    [O]
  lin{0..4}.model.1.weight      [1, C, 1, 1]    lpips' linear layers

Both sources are public: torchvision's `alexnet-owt-7be5be79.pth` (the
IMAGENET1K_V1 weights of `torchvision.models.alexnet`, keys `features.*` and
`classifier.*`) and lpips' `lpips/weights/v0.1/alex.pth` (keys
`lin{i}.model.1.weight`). Assemble the file once, where torch is installed:

  from oasis_jax.evaluation import lpips
  lpips.merge_weight_files('alexnet-owt-7be5be79.pth', 'alex.pth',
                           'lpips_alex.npz')

Usage: `metric = load_lpips(path)`; `metric(img0, img1)` -> [B] distances;
`metric.mean_pairwise_lpips(images)` -> mean over all pairs (diversity of
images generated from one label map; higher: more diverse).
"""

import os
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from oasis_jax.pretrained import weight_files

CONFIG_KEY = 'config.eval.lpips_weights'
SHIFT = (-.030, -.088, -.188)
SCALE = (.458, .448, .450)
EPS = 1e-10
# (torchvision `features` index, out channels, kernel, stride, padding).
CONVS = ((0, 64, 11, 4, 2), (3, 192, 5, 1, 2), (6, 384, 3, 1, 1),
         (8, 256, 3, 1, 1), (10, 256, 3, 1, 1))
TRUNK_KEYS = tuple(f'features.{i}.{p}' for i, *_ in CONVS
                   for p in ('weight', 'bias'))
LIN_KEYS = tuple(f'lin{k}.model.1.weight' for k in range(len(CONVS)))
STATE_KEYS = TRUNK_KEYS + LIN_KEYS


class LpipsWeightsError(ValueError):
  """The LPIPS weights file does not hold the expected state dict."""


class MissingLpipsWeightsError(FileNotFoundError):
  """The LPIPS weights file is not set or does not exist."""


def _normalize(x):
  return x / (jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True)) + EPS)


class LpipsAlexNet(nn.Module):
  """LPIPS distance of two NHWC image batches in [-1, 1] -> [B]."""

  def features(self, x) -> list[jax.Array]:
    x = (x - jnp.asarray(SHIFT, x.dtype)) / jnp.asarray(SCALE, x.dtype)
    taps = []
    for k, (_, ch, ksize, stride, pad) in enumerate(CONVS):
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


def _to_numpy(value) -> np.ndarray:
  if hasattr(value, 'detach'):  # A torch tensor.
    value = value.detach().cpu().numpy()
  return np.asarray(value, np.float32)


def merge_weights(alexnet_state_dict: Mapping[str, Any],
                  lpips_lin_state_dict: Mapping[str, Any]
                  ) -> dict[str, np.ndarray]:
  """The LPIPS state dict from torchvision AlexNet's and lpips' alex.pth.

  Args:
    alexnet_state_dict: torchvision `alexnet` state dict (`features.*`; the
      `classifier.*` entries are dropped).
    lpips_lin_state_dict: lpips' `weights/v0.1/alex.pth` (`lin{i}.model.1.*`).

  Returns:
    {key: float32 array} for every key of STATE_KEYS.
  """
  out = {}
  for keys, src, name in ((TRUNK_KEYS, alexnet_state_dict, 'AlexNet'),
                          (LIN_KEYS, lpips_lin_state_dict, 'lpips')):
    missing = [k for k in keys if k not in src]
    if missing:
      raise LpipsWeightsError(f'The {name} state dict lacks {missing}.')
    out.update({k: _to_numpy(src[k]) for k in keys})
  return out


def _read(path: str) -> dict[str, np.ndarray]:
  return weight_files.read_state_dict(path, what='the LPIPS weights',
                                 error=LpipsWeightsError)


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """The state dict in `path` (.npz or .pth), checked against STATE_KEYS."""
  if not path or not os.path.isfile(path):
    raise MissingLpipsWeightsError(
        f'LPIPS weights file {path!r} not found. Set {CONFIG_KEY} to an .npz '
        'or .pth with the AlexNet and lpips lin weights (see '
        'oasis_jax/lpips.py: merge_weight_files).')
  ext = os.path.splitext(path)[1].lower()
  if ext not in weight_files.EXTENSIONS:
    raise LpipsWeightsError(f'{path}: LPIPS weights must be .npz or .pth.')
  state = {k: np.asarray(v, np.float32) for k, v in _read(path).items()}
  missing = [k for k in STATE_KEYS if k not in state]
  if missing:
    raise LpipsWeightsError(f'{path} lacks the keys {missing}.')
  in_ch = 3
  for k, (idx, ch, ksize, _, _) in enumerate(CONVS):
    expected = {f'features.{idx}.weight': (ch, in_ch, ksize, ksize),
                f'features.{idx}.bias': (ch,),
                LIN_KEYS[k]: (1, ch, 1, 1)}
    for key, shape in expected.items():
      if state[key].shape != shape:
        raise LpipsWeightsError(f'{path}: {key} has shape '
                                f'{state[key].shape}, expected {shape}.')
    in_ch = ch
  return state


def merge_weight_files(alexnet_path: str, lpips_lin_path: str,
                       output_path: str) -> None:
  """Writes the LPIPS .npz from torchvision's and lpips' .pth files."""
  merged = merge_weights(_read(alexnet_path), _read(lpips_lin_path))
  np.savez(output_path, **merged)


def state_dict_to_params(state: Mapping[str, np.ndarray]) -> dict:
  """Flax params of LpipsAlexNet from the (torch layout) state dict."""
  params = {}
  for k, (idx, *_) in enumerate(CONVS):
    params[f'conv{k}'] = {
        'kernel': jnp.asarray(
            np.transpose(state[f'features.{idx}.weight'], (2, 3, 1, 0))),
        'bias': jnp.asarray(state[f'features.{idx}.bias'])}
    params[f'lin{k}'] = {
        'kernel': jnp.asarray(np.transpose(state[LIN_KEYS[k]], (2, 3, 1, 0)))}
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
  return LPIPS(state_dict_to_params(read_state_dict(path)))

