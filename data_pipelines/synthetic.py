"""The built-in synthetic data set: procedural label maps and textured images.

Each example is drawn on the fly from (seed, split, index): a background class,
often a "ground" region below a wavy horizon, a few blobs with irregular
outlines, and small patches of the don't-care class. Every class has its own
base colour and texture (stripes, checker, dots or wavy stripes at a
class-specific period and orientation, all axis-aligned so that horizontal
flips keep the distribution); examples vary in brightness, hue and texture
phase. A small GAN learns it in minutes on a CPU at 32x32 or 64x64.
"""

import numpy as np

_SPLIT_SALT = {'train': 0, 'val': 1}
_STRIPES, _CHECKER, _DOTS, _WAVES, _NOISE = range(5)
_PERIODS = (0.10, 0.16, 0.24)  # Texture periods, fractions of min(H, W).


def _hsv_to_rgb(h, s, v):
  """Vectorised HSV (all in [0, 1]) -> RGB [..., 3] in [0, 1]."""
  h = np.mod(h, 1.0) * 6.0
  i = np.floor(h).astype(np.int32) % 6
  f = h - np.floor(h)
  p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
  table = np.stack([np.stack(c, -1) for c in (
      (v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
  return np.take_along_axis(table, i[None, ..., None], axis=0)[0]


class ClassStyles:
  """Fixed appearance of each class id.

  Attributes:
    hue, sat, val: [C] base colour in HSV.
    kind: [C] texture kind (stripes, checker, dots, waves; noise for the
      don't-care class).
    vertical: [C] bool, texture along x (True) or y.
    period: [C] texture period as a fraction of min(H, W).
    contrast: [C] texture contrast.
  """

  def __init__(self, num_classes: int, dontcare_id: int):
    c = np.arange(num_classes)
    objects = c[c != dontcare_id]
    k = np.zeros(num_classes, np.int64)
    k[objects] = np.arange(len(objects))
    n = max(len(objects), 1)
    if n <= 12:  # Evenly spaced hues: the most distinct for few classes.
      self.hue = k / n
      self.sat = np.full(num_classes, 0.8)
      self.val = np.full(num_classes, 0.9)
    else:  # Golden-ratio hues with alternating saturation and value.
      self.hue = np.mod(k * 0.6180339887, 1.0)
      self.sat = np.where((k // 2) % 2 == 0, 0.85, 0.5)
      self.val = np.where((k // 4) % 2 == 0, 0.95, 0.6)
    self.kind = k % 4
    self.vertical = (k // 4) % 2 == 0
    self.period = np.asarray(_PERIODS)[(k // 2) % 3]
    self.contrast = np.full(num_classes, 0.5)
    if 0 <= dontcare_id < num_classes:
      self.hue[dontcare_id], self.sat[dontcare_id] = 0.0, 0.0
      self.val[dontcare_id] = 0.45
      self.kind[dontcare_id] = _NOISE
      self.contrast[dontcare_id] = 0.6


def _blob_masks(rng, count, yy, xx, r_range):
  """[count, H, W] bool masks of irregular blobs, and their radii.

  The outline is r0 * (1 + sum_k a_k cos(k theta + phi_k)); cos(k theta +
  phi) is the real part of exp(i phi) * (unit direction)^k, which avoids
  arctan2 and cos.
  """
  h_extent, w_extent = yy[-1, 0] + 1e-6, xx[0, -1] + 1e-6
  cy = rng.uniform(0.0, h_extent, count).astype(np.float32)[:, None, None]
  cx = rng.uniform(0.0, w_extent, count).astype(np.float32)[:, None, None]
  r0 = rng.uniform(*r_range, count)
  stretch = rng.uniform(0.7, 1.4, count).astype(np.float32)[:, None, None]
  dy, dx = (yy - cy) * stretch, (xx - cx) / stretch
  rho = np.sqrt(dy * dy + dx * dx) + np.float32(1e-6)
  direction = (dx + 1j * dy) / rho  # complex64, |direction| = 1.
  powers = {1: direction}
  powers[2] = direction * direction
  powers[3] = powers[2] * direction
  powers[5] = powers[3] * powers[2]
  radius = np.ones_like(rho)
  for harmonic, amp in ((2, 0.2), (3, 0.15), (5, 0.08)):
    a = rng.uniform(0.0, amp, count)
    phase = rng.uniform(0.0, 2 * np.pi, count)
    coef = (a * np.exp(1j * phase)).astype(np.complex64)[:, None, None]
    radius += (coef * powers[harmonic]).real
  return rho < (r0[:, None, None] * radius).astype(np.float32), r0


def generate(seed: int, split: str, index: int, hw: tuple[int, int],
             num_classes: int, dontcare_id: int = 0,
             styles: ClassStyles = None) -> tuple[np.ndarray, np.ndarray]:
  """Draws example `index` of `split`.

  Args:
    seed: the data set seed (same seed, split and index, same example).
    split: 'train' or 'val'.
    index: example index.
    hw: (H, W) in pixels.
    num_classes: class ids are in [0, num_classes).
    dontcare_id: the don't-care class (small patches of noise), -1 for none.
    styles: `ClassStyles(num_classes, dontcare_id)`, passed to save time.

  Returns:
    (image uint8 [H, W, 3], label int32 [H, W]).
  """
  if num_classes < 2:
    raise ValueError(f'synthetic data needs num_classes >= 2, got '
                     f'{num_classes}.')
  if styles is None:
    styles = ClassStyles(num_classes, dontcare_id)
  rng = np.random.default_rng([seed, _SPLIT_SALT.get(split, 2), index])
  h, w = hw
  unit = float(min(h, w))
  yy, xx = np.meshgrid(np.arange(h, dtype=np.float32) / unit,
                       np.arange(w, dtype=np.float32) / unit, indexing='ij')
  classes = np.arange(num_classes)
  objects = classes[classes != dontcare_id]
  has_dontcare = 0 <= dontcare_id < num_classes

  label = np.full((h, w), rng.choice(objects), np.int32)
  if rng.random() < 0.6:  # Ground below a wavy horizon.
    horizon = (rng.uniform(0.55, 0.8) * h / unit + rng.uniform(0.02, 0.07) *
               np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * xx[0] +
                      rng.uniform(0, 2 * np.pi)))
    label[yy > horizon[None, :]] = rng.choice(objects)
  num_blobs = int(rng.integers(2, 6))
  masks, radii = _blob_masks(rng, num_blobs, yy, xx, (0.1, 0.3))
  blob_classes = rng.choice(objects, num_blobs)
  for b in np.argsort(-radii):  # Large blobs first, small ones on top.
    label[masks[b]] = blob_classes[b]
  if has_dontcare and rng.random() < 0.7:
    masks, _ = _blob_masks(rng, int(rng.integers(1, 4)), yy, xx,
                           (0.03, 0.08))
    label[masks.any(axis=0)] = dontcare_id

  # Per-example variation: brightness, hue shift, texture phases.
  brightness = rng.uniform(0.85, 1.15)
  hue_shift = rng.uniform(-0.03, 0.03)
  phase = rng.uniform(0.0, 1.0, (2, num_classes)).astype(np.float32)
  colour = _hsv_to_rgb(styles.hue + hue_shift, styles.sat, styles.val)

  period = (styles.period * unit).astype(np.float32)[label]
  along_x = styles.vertical[label]
  px = np.arange(w, dtype=np.float32)[None, :]
  py = np.arange(h, dtype=np.float32)[:, None]
  u = np.where(along_x, px, py) / period + phase[0][label]
  v = np.where(along_x, py, px) / period + phase[1][label]
  two_pi = np.float32(2 * np.pi)
  stripes = 0.5 + 0.5 * np.sin(two_pi * u)
  checker = (np.floor(u) + np.floor(v)) % 2
  fu, fv = u - np.floor(u) - 0.5, v - np.floor(v) - 0.5
  dots = (fu * fu + fv * fv < 0.09).astype(np.float32)
  waves = 0.5 + 0.5 * np.sin(two_pi * (u + 0.3 * np.sin(0.5 * two_pi * v)))
  noise = rng.random((h, w), dtype=np.float32)
  texture = np.choose(styles.kind[label],
                      (stripes, checker, dots, waves, noise))
  contrast = styles.contrast.astype(np.float32)[label]
  shade = (1.0 - contrast + contrast * texture) * np.float32(brightness * 255)
  image = colour.astype(np.float32)[label] * shade[..., None]
  image += rng.standard_normal(image.shape, dtype=np.float32) * 4.0
  image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
  return image, label


class SyntheticSource:
  """Grain random-access source of `num_examples` synthetic examples.

  Yields dicts {'image': uint8 [H, W, 3], 'label': int32 [H, W], 'index'}.
  """

  def __init__(self, num_examples: int, hw: tuple[int, int], num_classes: int,
               dontcare_id: int = 0, seed: int = 0, split: str = 'train'):
    self._num_examples = int(num_examples)
    self._hw = tuple(hw)
    self._num_classes = int(num_classes)
    self._dontcare_id = int(dontcare_id)
    self._seed = int(seed)
    self._split = split
    self._styles = ClassStyles(self._num_classes, self._dontcare_id)

  def __len__(self) -> int:
    return self._num_examples

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    index = int(index) % self._num_examples
    image, label = generate(self._seed, self._split, index, self._hw,
                            self._num_classes, self._dontcare_id,
                            self._styles)
    return {'image': image, 'label': label, 'index': np.int32(index)}

  def __repr__(self) -> str:
    return (f'SyntheticSource(split={self._split!r}, n={self._num_examples}, '
            f'hw={self._hw}, num_classes={self._num_classes})')
