"""Writes the bundled example label maps oasis_jax/examples/*.png (run once).

Three 64x64 8-bit label maps of class ids 0..5, chosen to read as scenes with
ADE20K's first classes (0 unlabeled, 1 wall, 2 building, 3 sky, 4 floor,
5 tree); any model with at least 6 classes accepts them (the synthetic data
set has exactly 6). Deterministic: running it again writes the same files.

  python notebooks/make_examples.py
"""

import os

import numpy as np
from PIL import Image

SIZE = 64
WALL, BUILDING, SKY, FLOOR, TREE = 1, 2, 3, 4, 5


def _disc(label, cy, cx, r, value):
  yy, xx = np.mgrid[:SIZE, :SIZE]
  label[(yy - cy)**2 + (xx - cx)**2 <= r * r] = value


def street() -> np.ndarray:
  """Sky, a row of buildings, two trees, the ground."""
  label = np.full((SIZE, SIZE), SKY, np.uint8)
  for x0, x1, top in ((0, 14, 14), (14, 30, 24), (30, 44, 10), (44, 64, 20)):
    label[top:44, x0:x1] = BUILDING
  label[44:, :] = FLOOR
  _disc(label, 38, 12, 8, TREE)
  _disc(label, 36, 50, 10, TREE)
  label[44:, 11:14] = TREE  # Trunk.
  return label


def room() -> np.ndarray:
  """A wall with a window onto the sky, the floor, a plant."""
  label = np.full((SIZE, SIZE), WALL, np.uint8)
  label[10:30, 20:44] = SKY
  label[18:20, 20:44] = WALL  # Window bar.
  label[40:, :] = FLOOR
  _disc(label, 38, 52, 7, TREE)
  label[0:3, :] = 0  # An unlabeled strip.
  return label


def landscape() -> np.ndarray:
  """Sky over rolling ground with trees."""
  label = np.full((SIZE, SIZE), SKY, np.uint8)
  xx = np.arange(SIZE)
  horizon = (36 + 5 * np.sin(xx / 9.0)).astype(int)
  for x in range(SIZE):
    label[horizon[x]:, x] = FLOOR
  for cy, cx, r in ((34, 10, 7), (30, 30, 9), (37, 54, 6)):
    _disc(label, cy, cx, r, TREE)
  return label


EXAMPLES = {'street': street, 'room': room, 'landscape': landscape}


def main() -> None:
  out = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))), 'oasis_jax', 'examples')
  os.makedirs(out, exist_ok=True)
  for name, make in EXAMPLES.items():
    Image.fromarray(make()).save(os.path.join(out, f'{name}.png'),
                                           optimize=True)
  print(f'wrote {len(EXAMPLES)} label maps to {out}')


if __name__ == '__main__':
  main()
