"""Label maps: PNG bytes -> class ids, for training, `inspect` and `generate`.

One policy, whoever reads the file:

- Single-channel images hold class ids: 8-bit ('L'), palette-mode ('P': the
  pixel values are the ids, the embedded colours are for display only),
  1-bit ('1'), with alpha ('LA', 'PA': the first channel), and 16-bit or
  32-bit integer ('I;16', 'I;16B', 'I': for more than 256 classes).
  Float images ('F') are rejected.
- RGB(A) images hold colours when a palette is given and every colour of the
  image is in it (the id of a colour is the first id that has it). Otherwise
  an image that is grey everywhere (R = G = B) holds ids saved as RGB, and
  anything else is an error listing the colours that are not in the palette
  (or saying that there is no palette).
- A data set's on-disk convention (`remap`, e.g. COCO-Stuff's v -> v + 1,
  255 -> 0) applies to ids read from pixel values, never to palette colours
  (those are class ids already).
- Ids outside [0, num_classes) are an error naming the file, the ids and
  their pixel counts (`check_ids`).

Everything here is numpy and Pillow only (no JAX), light enough for Grain
worker processes.
"""

import io
import json
from typing import Callable, Optional
import warnings

from etils import epath
import numpy as np
from PIL import Image

from data_pipelines import errors

# Pillow modes of single-channel integer images wider than 8 bits.
INTEGER_MODES = ('I', 'I;16', 'I;16B', 'I;16L', 'I;16N')
# At most this many files, ids or colours are listed in one error message.
MAX_LISTED = 10

Remap = Callable[[np.ndarray], np.ndarray]


def open_image(data: bytes, path: str, what: str = 'label') -> Image.Image:
  """Decodes `data` fully with Pillow.

  Raises:
    DataError: naming `path`, for empty, unreadable or truncated files.
  """
  if not data:
    raise errors.DataError(f'{path}: empty {what} file (0 bytes).', file=path)
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')
      img = Image.open(io.BytesIO(data))
      img.load()
  except Image.UnidentifiedImageError as e:
    raise errors.DataError(f'{path}: unreadable or truncated {what} file '
                           f'(Pillow cannot identify it; {len(data)} bytes).',
                           file=path) from e
  except Exception as e:  # pylint: disable=broad-except
    raise errors.DataError(f'{path}: unreadable or truncated {what} file '
                           f'({type(e).__name__}: {e}).', file=path) from e
  return img


def rgb_codes(rgb: np.ndarray) -> np.ndarray:
  """[..., 3] integer colours -> [...] int64 codes r << 16 | g << 8 | b."""
  rgb = np.asarray(rgb).astype(np.int64)
  return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _format_code(code: int) -> str:
  return f'({code >> 16}, {(code >> 8) & 255}, {code & 255})'


def load_palette(path: str, num_classes: int) -> np.ndarray:
  """Reads a palette file: a JSON list of [r, g, b] per class id.

  Args:
    path: the JSON file.
    num_classes: the data set's class count (the list may be shorter).

  Returns:
    uint8 [n, 3], n <= num_classes.

  Raises:
    DataError: naming the file, when it is unreadable, malformed, lists more
      colours than classes, or repeats a colour.
  """
  try:
    entries = json.loads(epath.Path(path).read_text())
  except (OSError, ValueError) as e:
    raise errors.DataError(f'{path}: cannot read the palette ({e}).',
                           file=path) from e
  try:
    palette = np.asarray(entries, dtype=np.int64)
  except (TypeError, ValueError):
    palette = None
  if (palette is None or palette.ndim != 2 or palette.shape[1] != 3 or
      palette.min(initial=0) < 0 or palette.max(initial=0) > 255):
    raise errors.DataError(f'{path}: a palette is a JSON list of [r, g, b] '
                           '(0..255) per class id.', file=path)
  if len(palette) > num_classes:
    raise errors.DataError(f'{path}: {len(palette)} colours for num_classes='
                           f'{num_classes}.', file=path)
  codes = rgb_codes(palette)
  uniq, counts = np.unique(codes, return_counts=True)
  if (counts > 1).any():
    twice = [tuple(int(v) for v in palette[codes == c][0])
             for c in uniq[counts > 1]]
    raise errors.DataError(f'{path}: colours used by more than one class id: '
                           f'{twice[:MAX_LISTED]}.', file=path)
  return palette.astype(np.uint8)


class PaletteMatcher:
  """Colours -> class ids of one palette (the first id of a shared colour).

  Picklable (it travels to Grain worker processes with the decoder).
  """

  def __init__(self, palette: np.ndarray, name: str = ''):
    """`palette`: [n, 3] uint8 colour of each class id; `name` for messages."""
    codes = rgb_codes(np.asarray(palette))
    self.name = name
    self._codes, first = np.unique(codes, return_index=True)
    self._ids = first.astype(np.int32)

  def match(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """([H, W] int32 ids, [H, W] bool: the colour is in the palette)."""
    codes = rgb_codes(rgb)
    pos = np.minimum(np.searchsorted(self._codes, codes), len(self._codes) - 1)
    return self._ids[pos], self._codes[pos] == codes


def _unknown_colours(rgb: np.ndarray, known: np.ndarray) -> str:
  codes = rgb_codes(rgb)[~known]
  bad, counts = np.unique(codes, return_counts=True)
  order = np.argsort(-counts, kind='stable')[:MAX_LISTED]
  listed = ', '.join(f'{_format_code(c)}: {n} px' for c, n in
                     zip(bad[order].tolist(), counts[order].tolist()))
  return f'{len(bad)} colour(s) {{}}: {listed}'


def decode_label(data: bytes, path: str, *,
                 palette: Optional[PaletteMatcher] = None,
                 remap: Optional[Remap] = None) -> np.ndarray:
  """Label PNG bytes -> int32 [H, W] class ids (see the module's policy).

  Ids are not checked against the class count here; see `check_ids`.

  Args:
    data: the file's bytes.
    path: the file (for messages).
    palette: the colours of the class ids, for colour-coded (RGB) labels.
    remap: the data set's raw pixel value -> class id function.

  Raises:
    DataError: naming the file: unreadable, a float or unsupported mode,
      colours outside the palette or without one.
  """
  img = open_image(data, path, 'label')
  mode = img.mode
  if mode in ('L', 'P', 'I') or mode.startswith('I;16'):
    raw = np.asarray(img)
  elif mode == '1':
    raw = np.asarray(img, dtype=np.uint8)
  elif mode in ('LA', 'PA'):
    raw = np.asarray(img)[..., 0]
  elif mode in ('RGB', 'RGBA'):
    rgb = np.asarray(img)[..., :3]
    if palette is not None:
      ids, known = palette.match(rgb)
      if known.all():
        return ids
    grey = ((rgb[..., 0] == rgb[..., 1]).all() and
            (rgb[..., 1] == rgb[..., 2]).all())
    if not grey:
      if palette is None:
        raise errors.DataError(
            f'{path}: colour-coded label (mode {mode}) but no palette; set '
            'config.data.palette to a JSON list of [r, g, b] per class id, '
            'or save labels as single-channel PNGs of class ids.', file=path)
      raise errors.DataError(
          f'{path}: ' + _unknown_colours(rgb, known).format(
              f'not in the palette {palette.name}'.rstrip()) + '.', file=path)
    raw = rgb[..., 0]
  else:
    raise errors.DataError(
        f'{path}: unsupported label image mode {mode}; label maps are '
        'single-channel PNGs of class ids (8- or 16-bit) or RGB colours of '
        'a palette.', file=path)
  raw = raw.astype(np.int32)
  return raw if remap is None else np.asarray(remap(raw), np.int32)


def check_ids(label: np.ndarray, num_classes: int, path: str, *,
              hint: str = '') -> None:
  """Raises if a class id is outside [0, num_classes).

  Args:
    label: [H, W] integer class ids.
    num_classes: the class count.
    path: the file (for the message).
    hint: appended to the message (e.g. what convention to try).

  Raises:
    DataError: '<path>: class ids outside [0, n): <id> (<count> px), ...'.
  """
  if not label.size:
    return
  bad_mask = (label < 0) | (label >= num_classes)
  if bad_mask.any():
    bad, counts = np.unique(label[bad_mask], return_counts=True)
    listed = ', '.join(f'{b} ({n} px)' for b, n in
                       zip(bad[:MAX_LISTED].tolist(),
                           counts[:MAX_LISTED].tolist()))
    raise errors.DataError(f'{path}: class ids outside [0, {num_classes}): '
                           f'{listed}{hint}.', file=path)


def read_label(path: str, num_classes: int, *,
               palette: Optional[PaletteMatcher] = None,
               remap: Optional[Remap] = None, hint: str = '') -> np.ndarray:
  """A label file -> int32 [H, W] class ids, checked against num_classes.

  Raises:
    DataError: naming the file (unreadable, see `decode_label`,
      `check_ids`).
  """
  try:
    data = epath.Path(path).read_bytes()
  except OSError as e:
    raise errors.DataError(f'{path}: cannot read the file ({e}).',
                           file=path) from e
  label = decode_label(data, path, palette=palette, remap=remap)
  check_ids(label, num_classes, path, hint=hint)
  return label
