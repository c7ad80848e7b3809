"""Shared data-set machinery: folder layouts, pairing, decoding, validation.

A data set on disk is a `Layout` (where the images and label maps of a split
live and how their file names pair up) plus a label convention (how a label
PNG value becomes a class id). `FolderDataset` lists the pairs of a split and
`ExampleDecoder` turns the bytes of one pair into a uint8 RGB image and int32
class ids, raising `DataError` with the file name for anything wrong.

Everything here is numpy and Pillow only (no JAX, no TFDS), so that Grain
worker processes stay light.
"""

import dataclasses
import io
import json
import os
from typing import Callable, NamedTuple, Optional, Sequence
import warnings

from etils import epath
import numpy as np
from PIL import Image

# Pillow modes of 16-bit (or wider) single-channel images.
_WIDE_MODES = ('I', 'I;16', 'I;16B', 'I;16L', 'I;16N', 'F')
# At most this many files or colours are listed in one error message.
_MAX_LISTED = 10


class DataError(ValueError):
  """A problem with the data; the message names the file and the problem.

  Attributes:
    file: the file (or folder) at fault, when there is one.
  """

  def __init__(self, message: str, file: Optional[str] = None):
    super().__init__(message)
    self.file = file

  def __reduce__(self):  # Keeps `file` through pickling (Grain workers).
    return type(self), (str(self), self.file)


class Problem(NamedTuple):
  """One problem found in a data set: the file and the full message."""
  file: str
  message: str


def image_hw(data_config) -> tuple[int, int]:
  """(H, W) of the network input: (round(image_size / aspect), image_size)."""
  width = int(data_config.image_size)
  return int(round(width / float(data_config.aspect_ratio))), width


@dataclasses.dataclass(frozen=True)
class Pair:
  """One image and its label map.

  Attributes:
    key: the name they share (relative path without the layout's suffixes).
    image: path of the image file.
    label: path of the label PNG.
  """
  key: str
  image: str
  label: str


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where a split's files live, relative to the data set root.

  Attributes:
    image_dir: image folder, with `{split}` standing for the split's folder.
    label_dir: label folder, likewise.
    image_suffixes: endings of image files (anything else is ignored); the
      ending is removed to get the pairing key.
    label_suffixes: endings of label files, likewise.
    split_dirs: split name ('train', 'val') -> folder name on disk.
    recursive: whether files sit in sub-folders (Cityscapes' cities).
  """
  image_dir: str
  label_dir: str
  image_suffixes: tuple[str, ...]
  label_suffixes: tuple[str, ...]
  split_dirs: dict[str, str] = dataclasses.field(
      default_factory=lambda: {'train': 'train', 'val': 'val'})
  recursive: bool = False

  def dirs(self, root, split: str) -> tuple[epath.Path, epath.Path]:
    """(image folder, label folder) of `split` under `root`."""
    if split not in self.split_dirs:
      raise DataError(f'Unknown split {split!r}; expected one of '
                      f'{sorted(self.split_dirs)}.')
    name = self.split_dirs[split]
    root = epath.Path(root)
    return (root / self.image_dir.format(split=name),
            root / self.label_dir.format(split=name))


def _walk(directory: epath.Path, recursive: bool):
  """Yields (path relative to `directory` in posix form, full path) of files.

  Local folders are listed with os.scandir (no stat per file); others (e.g.
  gs://) through epath.
  """
  path_str = os.fspath(directory)
  if '://' not in path_str:
    stack = ['']
    while stack:
      rel_dir = stack.pop()
      with os.scandir(os.path.join(path_str, rel_dir)) as entries:
        for entry in entries:
          rel = f'{rel_dir}/{entry.name}' if rel_dir else entry.name
          if entry.is_dir():
            if recursive:
              stack.append(rel)
          else:
            yield rel, entry.path
    return
  stack = [directory]
  while stack:
    for path in stack.pop().iterdir():
      if path.is_dir():
        if recursive:
          stack.append(path)
      else:
        yield path.relative_to(directory).as_posix(), str(path)


def _index_files(directory: epath.Path, suffixes: Sequence[str],
                 recursive: bool) -> tuple[dict[str, str], list[Problem]]:
  """Maps pairing key -> path for files ending in one of `suffixes`.

  Args:
    directory: the folder to list.
    suffixes: accepted (case-insensitive) file name endings.
    recursive: also list sub-folders (the key keeps the sub-folder).

  Returns:
    (key -> path, problems) where problems name files whose key repeats.
  """
  files = {}
  problems = []
  for rel, path in sorted(_walk(directory, recursive)):
    lower = rel.lower()
    suffix = next((s for s in suffixes if lower.endswith(s.lower())), None)
    if suffix is None:
      continue
    key = rel[:len(rel) - len(suffix)]
    if key in files:
      problems.append(Problem(path, f'{path}: same name as {files[key]}; '
                              'only one file per name is allowed.'))
      continue
    files[key] = path
  return files, problems


def list_pairs(layout: Layout, root: str, split: str,
               problems: Optional[list[Problem]] = None,
               dataset_name: str = '') -> list[Pair]:
  """Lists the image/label pairs of a split, sorted by name.

  Args:
    layout: the data set's layout.
    root: the data set root folder.
    split: 'train' or 'val'.
    problems: if given, problems are appended here (one per file) and the
      pairs that are fine are returned; otherwise problems raise a
      `DataError` that lists them.
    dataset_name: used in messages.

  Returns:
    The pairs, sorted by key.

  Raises:
    DataError: a missing folder, an empty split, an image without a label or
      a label without an image (when `problems` is None).
  """
  found = []
  image_dir, label_dir = layout.dirs(root, split)
  what = f'{dataset_name} {split} split' if dataset_name else f'{split} split'
  sub = layout.split_dirs[split]
  for directory in (image_dir, label_dir):
    if not directory.is_dir():
      found.append(Problem(str(directory), (
          f'{directory}: folder not found ({what}; expected images in '
          f'{layout.image_dir.format(split=sub)} and labels in '
          f'{layout.label_dir.format(split=sub)} under the data root).')))
  pairs = []
  if not found:
    images, dup_i = _index_files(image_dir, layout.image_suffixes,
                                 layout.recursive)
    labels, dup_l = _index_files(label_dir, layout.label_suffixes,
                                 layout.recursive)
    found.extend(dup_i + dup_l)
    for key in sorted(set(images) - set(labels)):
      found.append(Problem(images[key], (
          f'{images[key]}: image without a label (expected '
          f'{label_dir / key}{layout.label_suffixes[0]}).')))
    for key in sorted(set(labels) - set(images)):
      found.append(Problem(labels[key], (
          f'{labels[key]}: label without an image (expected '
          f'{image_dir / key}{layout.image_suffixes[0]}).')))
    pairs = [Pair(key, images[key], labels[key])
             for key in sorted(set(images) & set(labels))]
    if not images and not labels:
      found.append(Problem(str(image_dir), (
          f'{image_dir}: empty split, no images '
          f'({"/".join(layout.image_suffixes)}) found ({what}).')))
  if problems is not None:
    problems.extend(found)
    return pairs
  if found:
    listed = [p.message for p in found[:_MAX_LISTED]]
    more = len(found) - len(listed)
    raise DataError(
        f'{what} of {root}:\n  ' + '\n  '.join(listed) +
        (f'\n  ... and {more} more problems' if more else '') +
        '\n(python -m data_pipelines.inspect lists them all).',
        file=found[0].file)
  return pairs


def load_palette(path: str, num_classes: int) -> np.ndarray:
  """Reads a JSON list of [r, g, b] per class id -> uint8 [n, 3].

  Raises:
    DataError: naming the file, when it is unreadable, malformed, lists more
      colours than classes, or repeats a colour.
  """
  try:
    entries = json.loads(epath.Path(path).read_text())
  except (OSError, ValueError) as e:
    raise DataError(f'{path}: cannot read the palette ({e}).', file=path) from e
  try:
    palette = np.asarray(entries, dtype=np.int64)
  except (TypeError, ValueError):
    palette = None
  if (palette is None or palette.ndim != 2 or palette.shape[1] != 3 or
      palette.min(initial=0) < 0 or palette.max(initial=0) > 255):
    raise DataError(f'{path}: a palette is a JSON list of [r, g, b] (0..255) '
                    'per class id.', file=path)
  if len(palette) > num_classes:
    raise DataError(f'{path}: {len(palette)} colours for num_classes='
                    f'{num_classes}.', file=path)
  codes = _rgb_codes(palette[None])[0]
  uniq, counts = np.unique(codes, return_counts=True)
  if (counts > 1).any():
    twice = [tuple(int(v) for v in palette[codes == c][0])
             for c in uniq[counts > 1]]
    raise DataError(f'{path}: colours used by more than one class id: '
                    f'{twice[:_MAX_LISTED]}.', file=path)
  return palette.astype(np.uint8)


def _rgb_codes(rgb: np.ndarray) -> np.ndarray:
  """[..., 3] integer colours -> [...] int32 codes r << 16 | g << 8 | b."""
  rgb = rgb.astype(np.int32)
  return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _open(data: bytes, path: str, what: str) -> Image.Image:
  """Decodes `data` fully with Pillow; `DataError` naming `path` if it fails."""
  if not data:
    raise DataError(f'{path}: empty {what} file (0 bytes).', file=path)
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')
      img = Image.open(io.BytesIO(data))
      img.load()
  except Image.UnidentifiedImageError as e:
    raise DataError(f'{path}: unreadable or truncated {what} file (Pillow '
                    f'cannot identify it; {len(data)} bytes).',
                    file=path) from e
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f'{path}: unreadable or truncated {what} file '
                    f'({type(e).__name__}: {e}).', file=path) from e
  return img


def read_bytes(path: str) -> bytes:
  """The bytes of a file; `DataError` naming it if it cannot be read."""
  try:
    return epath.Path(path).read_bytes()
  except OSError as e:
    raise DataError(f'{path}: cannot read the file ({e}).', file=path) from e


class ExampleDecoder:
  """Decodes one image/label pair and checks it.

  Picklable (it travels to Grain worker processes).

  Attributes:
    num_classes: class ids must be < this.
    remap: raw label array (int32) -> class ids, or None for ids as they are.
    palette: uint8 [n, 3] colour of each class id, for colour-coded labels.
    palette_file: where the palette came from (for messages).
    wide_labels: accept 16-bit single-channel label PNGs of class ids (data
      sets with more than 256 class ids, e.g. LVIS); else they are an error.
  """

  def __init__(self, num_classes: int,
               remap: Optional[Callable[[np.ndarray], np.ndarray]] = None,
               palette: Optional[np.ndarray] = None,
               palette_file: str = '', wide_labels: bool = False):
    self.num_classes = int(num_classes)
    self.wide_labels = bool(wide_labels)
    self.remap = remap
    self.palette = palette
    self.palette_file = palette_file
    if palette is not None:
      codes = _rgb_codes(palette)
      order = np.argsort(codes)
      self._codes = codes[order]
      self._ids = order.astype(np.int32)

  def decode_image(self, data: bytes, path: str) -> np.ndarray:
    """Image bytes -> uint8 [H, W, 3] (grey, palette, RGBA, CMYK converted)."""
    img = _open(data, path, 'image')
    try:
      if img.mode in _WIDE_MODES:
        arr = np.asarray(img)
        if img.mode.startswith('I;16') or arr.max(initial=0) > 255:
          arr = arr.astype(np.float64) / 257.0
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=-1)
      if img.mode == 'P' and 'transparency' in img.info:
        img = img.convert('RGBA')
      if img.mode != 'RGB':
        img = img.convert('RGB')
      return np.asarray(img, dtype=np.uint8)
    except Exception as e:  # pylint: disable=broad-except
      raise DataError(f'{path}: cannot convert the image (mode {img.mode}) '
                      f'to RGB ({e}).', file=path) from e

  def decode_label(self, data: bytes, path: str) -> np.ndarray:
    """Label PNG bytes -> int32 [H, W] class ids after the convention.

    Ids are not checked against num_classes here; see `check_ids`.
    """
    img = _open(data, path, 'label')
    mode = img.mode
    if self.wide_labels and mode in _WIDE_MODES and mode != 'F':
      raw = np.asarray(img).astype(np.int32)
      return raw if self.remap is None else self.remap(raw)
    if mode in _WIDE_MODES:
      raise DataError(f'{path}: 16-bit label image (Pillow mode {mode}); '
                      'label maps must be 8-bit PNGs (one class id per pixel'
                      ', or colours with config.data.palette).', file=path)
    if self.palette is not None:
      rgb = np.asarray(img.convert('RGB'))
      return self._colours_to_ids(rgb, path)
    if mode in ('L', 'P'):
      raw = np.asarray(img)
    elif mode == '1':
      raw = np.asarray(img, dtype=np.uint8)
    elif mode in ('LA', 'PA'):
      raw = np.asarray(img)[..., 0]
    elif mode in ('RGB', 'RGBA'):
      rgb = np.asarray(img)[..., :3]
      if not ((rgb[..., 0] == rgb[..., 1]).all() and
              (rgb[..., 1] == rgb[..., 2]).all()):
        raise DataError(f'{path}: colour-coded label (mode {mode}) but no '
                        'palette; set config.data.palette to a JSON list of '
                        '[r, g, b] per class id, or save labels as 8-bit '
                        'single-channel PNGs of class ids.', file=path)
      raw = rgb[..., 0]
    else:
      raise DataError(f'{path}: unsupported label image mode {mode}.',
                      file=path)
    raw = raw.astype(np.int32)
    return raw if self.remap is None else self.remap(raw)

  def _colours_to_ids(self, rgb: np.ndarray, path: str) -> np.ndarray:
    codes = _rgb_codes(rgb)
    pos = np.searchsorted(self._codes, codes)
    pos = np.minimum(pos, len(self._codes) - 1)
    ok = self._codes[pos] == codes
    if not ok.all():
      bad, counts = np.unique(codes[~ok], return_counts=True)
      order = np.argsort(-counts)[:_MAX_LISTED]
      listed = ', '.join(
          f'({c >> 16}, {(c >> 8) & 255}, {c & 255}): {n} px'
          for c, n in zip(bad[order].tolist(), counts[order].tolist()))
      raise DataError(f'{path}: {len(bad)} colour(s) not in the palette '
                      f'{self.palette_file}: {listed}.', file=path)
    return self._ids[pos]

  def check_ids(self, label: np.ndarray, path: str) -> None:
    """`DataError` naming `path` if a class id is >= num_classes."""
    if label.size and int(label.max()) >= self.num_classes:
      bad, counts = np.unique(label[label >= self.num_classes],
                              return_counts=True)
      listed = ', '.join(f'{b} ({n} px)' for b, n in
                         zip(bad[:_MAX_LISTED].tolist(),
                             counts[:_MAX_LISTED].tolist()))
      note = ' after the data set\'s remapping' if self.remap else ''
      raise DataError(f'{path}: label ids >= num_classes={self.num_classes}'
                      f'{note}: {listed}.', file=path)

  def __call__(self, image_data: bytes, label_data: bytes, image_path: str,
               label_path: str) -> tuple[np.ndarray, np.ndarray]:
    """Bytes of a pair -> (uint8 [H, W, 3] image, int32 [H, W] class ids).

    Raises:
      DataError: naming the file, for unreadable or truncated files, 16-bit
        or colour-coded labels without (or not matching) a palette,
        mismatched sizes, or class ids >= num_classes.
    """
    image = self.decode_image(image_data, image_path)
    label = self.decode_label(label_data, label_path)
    if image.shape[:2] != label.shape:
      raise DataError(
          f'{image_path} is {image.shape[1]}x{image.shape[0]} (WxH) but its '
          f'label {label_path} is {label.shape[1]}x{label.shape[0]}.',
          file=image_path)
    self.check_ids(label, label_path)
    return image, label


class FolderDataset:
  """A prepared data set folder: layout + label convention + class count.

  Attributes:
    name: data set name ('ade20k', ...).
    root: the data root folder.
    layout: where files live.
    decoder: the `ExampleDecoder` with this data set's label convention.
  """

  def __init__(self, name: str, root: str, layout: Layout,
               decoder: ExampleDecoder):
    self.name = name
    self.root = root
    self.layout = layout
    self.decoder = decoder

  @property
  def num_classes(self) -> int:
    return self.decoder.num_classes

  def list_pairs(self, split: str,
                 problems: Optional[list[Problem]] = None) -> list[Pair]:
    """The sorted pairs of `split`; see `list_pairs`."""
    if not self.root:
      raise DataError(f'{self.name}: config.data.root is not set (the '
                      'prepared data set folder).')
    return list_pairs(self.layout, self.root, split, problems, self.name)
