"""LVIS v1 (1203 long-tailed object categories) on COCO 2017 images.

Files as distributed, under `config.data.root`: `lvis_v1_train.json`,
`lvis_v1_val.json` and the COCO 2017 images in `train2017/` and `val2017/`
(an image's file is the last two parts of its `coco_url`; either split may
use images of both folders). Class id = LVIS category id (1..1203), 0 =
unlabeled (the don't-care class): 1204 class ids.

Label maps are painted from the annotations' polygons (or RLE) decoded with
pycocotools. Where objects overlap, `config.data.paint_order` decides:
'file' (the official rule: annotations in file order, later ones over
earlier ones) or 'small_on_top' (larger masks first, so smaller objects,
often of rare categories, stay visible; ties keep file order). An image
without annotations is all unlabeled; `config.data.keep_unannotated_train`
(default False) and `keep_unannotated_val` (default True) say whether such
images are kept.

Training reads label PNGs rasterized once by `prepare` (`python -m
data_pipelines.prepare --config=configs/lvis.py --config.data.root=DIR`,
also run on first use by a single-process run): 16-bit PNGs of class ids in
`<labels_dir>/{train,val}_label/<image stem>.png`, the COCO-Stuff layout,
read like any label map (`label_maps`: 16-bit PNGs hold ids). With
`config.data.rasterize_on_the_fly=True` the label maps are painted at every
read instead (small experiments; no preparation).
"""

import concurrent.futures
import dataclasses
import io
import json
import os
import sys
import threading
import time
from typing import Any, Optional, Sequence

from etils import epath
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from data_pipelines import core

NAME = 'lvis'
NUM_CATEGORIES = 1203
NUM_CLASSES = NUM_CATEGORIES + 1  # With the unlabeled id 0.
# The COCO-Stuff recipe's config.data values (docs/recipes.md).
RECIPE = dict(num_classes=NUM_CLASSES, dontcare_id=0, image_size=256,
              aspect_ratio=1.0, load_size=286, random_crop=True,
              random_flip=True)
ANNOTATION_FILES = {'train': 'lvis_v1_train.json', 'val': 'lvis_v1_val.json'}
PAINT_ORDERS = ('file', 'small_on_top')
# The `frequency` field of an LVIS category -> its group.
FREQUENCY_GROUPS = {'r': 'rare', 'c': 'common', 'f': 'frequent'}
# config.data fields of LVIS (configs/lvis.py) and their values when absent.
DEFAULTS = {
    'paint_order': 'file',
    'keep_unannotated_train': False,
    'keep_unannotated_val': True,
    'labels_dir': '',
    'rasterize_on_the_fly': False,
}
MANIFEST = 'prepared.json'  # Written last in each prepared label folder.
_PREPARE_COMMAND = ('python -m data_pipelines.prepare --config=configs/lvis.py'
                    ' --config.data.root=DIR')


@dataclasses.dataclass(frozen=True)
class Record:
  """One LVIS image and its annotations.

  Attributes:
    image_id: the LVIS (COCO) image id.
    key: the image file's stem ('000000000139').
    image: path of the image file.
    height: image height from the JSON.
    width: image width from the JSON.
    annotations: (annotation id, category id, segmentation) in file order;
      empty in the light records read from a prepared folder's index.
    num_annotations: how many annotations the image has.
  """
  image_id: int
  key: str
  image: str
  height: int
  width: int
  annotations: tuple[tuple[int, int, Any], ...]
  num_annotations: int


@dataclasses.dataclass(frozen=True)
class Annotations:
  """An LVIS annotation file, parsed and checked.

  Attributes:
    file: its path.
    records: every image, sorted by image id.
    frequency: category id -> 'r', 'c' or 'f'.
  """
  file: str
  records: tuple[Record, ...]
  frequency: dict[int, str]


def _setting(data_config, key: str):
  # LVIS's own keys are not in configs/default.py: a data config made from
  # another file (--config=configs/coco.py --config.data.name=lvis) lacks
  # them. configs/lvis.py sets them, and a saved config.json is merged onto
  # DEFAULTS (oasis_jax/config/workdir.py).
  return data_config.get(key, DEFAULTS[key])


def _fail(path: str, message: str) -> core.DataError:
  return core.DataError(f'{path}: {message}', file=path)


def _int(value, path: str, what: str) -> int:
  if isinstance(value, bool) or not isinstance(value, int):
    raise _fail(path, f'{what} is {value!r}; expected an integer.')
  return value


def parse_annotations(text: str, path: str, root: str) -> Annotations:
  """Parses and checks the text of an LVIS v1 annotation file.

  Args:
    text: the JSON text.
    path: the file (for messages).
    root: the data root; image files are `root/<folder>/<file>` from the last
      two parts of each image's `coco_url`.

  Returns:
    The parsed `Annotations`.

  Raises:
    DataError: one line naming `path`, for malformed JSON, a missing or
      mistyped field, a category id outside 1..1203, an unknown frequency,
      or an annotation of an unknown image.
  """
  try:
    data = json.loads(text)
  except ValueError as e:
    raise _fail(path, f'malformed JSON ({e}).') from e
  if not isinstance(data, dict):
    raise _fail(path, 'not an LVIS annotation file (expected a JSON object '
                'with images, annotations and categories).')
  for field in ('images', 'annotations', 'categories'):
    if not isinstance(data.get(field), list):
      raise _fail(path, f'not an LVIS annotation file (no {field!r} list).')
  frequency = {}
  try:
    for cat in data['categories']:
      cat_id = _int(cat['id'], path, 'a category id')
      if not 1 <= cat_id <= NUM_CATEGORIES:
        raise _fail(path, f'category id {cat_id} is outside 1..'
                    f'{NUM_CATEGORIES} (LVIS v1).')
      if cat.get('frequency') not in FREQUENCY_GROUPS:
        raise _fail(path, f'category {cat_id} has frequency '
                    f'{cat.get("frequency")!r}; expected one of '
                    f'{sorted(FREQUENCY_GROUPS)}.')
      frequency[cat_id] = cat['frequency']
    images = {}
    for img in data['images']:
      image_id = _int(img['id'], path, 'an image id')
      url = img.get('coco_url')
      parts = url.rstrip('/').split('/') if isinstance(url, str) else []
      if len(parts) < 2:
        raise _fail(path, f'image {image_id} has coco_url {url!r}; expected '
                    'a URL ending in <folder>/<file> (e.g. train2017/'
                    '000000000139.jpg).')
      height = _int(img['height'], path, f'the height of image {image_id}')
      width = _int(img['width'], path, f'the width of image {image_id}')
      images[image_id] = (parts[-2], parts[-1], height, width)
    grouped = {image_id: [] for image_id in images}
    for ann in data['annotations']:
      ann_id = ann.get('id')
      image_id = ann['image_id']
      cat_id = ann['category_id']
      if (isinstance(cat_id, bool) or not isinstance(cat_id, int) or
          not 1 <= cat_id <= NUM_CATEGORIES):
        raise _fail(path, f'annotation {ann_id} (image {image_id}) has '
                    f'category_id {cat_id!r}; LVIS v1 category ids are 1..'
                    f'{NUM_CATEGORIES}.')
      if image_id not in grouped:
        raise _fail(path, f'annotation {ann_id} refers to image {image_id!r}'
                    ', which is not in the images list.')
      grouped[image_id].append((ann_id, cat_id, ann['segmentation']))
  except KeyError as e:
    raise _fail(path, f'an entry lacks the field {e.args[0]!r} (LVIS v1 '
                'schema).') from e
  except TypeError as e:
    raise _fail(path, f'not in the LVIS v1 schema ({e}).') from e
  records = []
  for image_id in sorted(images):
    folder, name, height, width = images[image_id]
    records.append(Record(image_id, os.path.splitext(name)[0],
                          os.path.join(root, folder, name), height, width,
                          tuple(grouped[image_id]),
                          len(grouped[image_id])))
  return Annotations(path, tuple(records), frequency)


# path -> ((root, size, mtime), parsed file): the last parse of each file.
_CACHE: dict[str, tuple[tuple[str, int, int], Annotations]] = {}
_CACHE_LOCK = threading.Lock()


def load_annotations(path: str, root: str) -> Annotations:
  """`parse_annotations` of a file, cached per (path, size, mtime).

  Raises:
    DataError: naming the file, if it is missing or unreadable (and see
      `parse_annotations`).
  """
  try:
    stat = os.stat(path)
  except OSError as e:
    raise _fail(path, f'LVIS annotation file not found ({e.strerror}).') from e
  key = (root, stat.st_size, stat.st_mtime_ns)
  with _CACHE_LOCK:
    if path in _CACHE and _CACHE[path][0] == key:
      return _CACHE[path][1]
  text = core.read_bytes(path).decode('utf-8', errors='replace')
  annotations = parse_annotations(text, path, root)
  with _CACHE_LOCK:
    _CACHE[path] = (key, annotations)
  return annotations


def annotation_mask(segmentation, height: int, width: int, path: str = '',
                    what: str = 'an annotation') -> np.ndarray:
  """bool [height, width] mask of one annotation's polygons or RLE.

  Args:
    segmentation: a list of polygons ([x0, y0, x1, y1, ...] in pixels), an
      uncompressed RLE ({'size': [h, w], 'counts': [...]}) or a compressed
      one ({'size', 'counts': str}), as in COCO/LVIS files.
    height: image height.
    width: image width.
    path: the annotation file (for messages).
    what: the annotation (for messages).

  Raises:
    DataError: a segmentation pycocotools cannot decode, or an RLE of
      another size.
  """
  try:
    if isinstance(segmentation, list):
      if not segmentation:
        return np.zeros((height, width), bool)
      polygons = [list(map(float, p)) for p in segmentation]
      rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict):
      size = list(segmentation.get('size', ()))
      if size != [height, width]:
        raise _fail(path, f'{what} has an RLE of size {size}; the image is '
                    f'{height}x{width} (HxW).')
      if isinstance(segmentation['counts'], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
      else:
        counts = segmentation['counts']
        rle = {'size': size, 'counts': (counts.encode('ascii')
                                        if isinstance(counts, str)
                                        else counts)}
    else:
      raise TypeError(f'segmentation of type {type(segmentation).__name__}')
    return mask_utils.decode(rle).astype(bool)
  except core.DataError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise _fail(path, f'{what}: pycocotools cannot decode its segmentation '
                f'({type(e).__name__}: {e}).') from e


def rasterize(record: Record, paint_order: str = 'file',
              path: str = '') -> np.ndarray:
  """The class-id map of one image.

  Args:
    record: the image and its annotations.
    paint_order: 'file' (later annotations over earlier ones) or
      'small_on_top' (masks painted by decreasing pixel area, ties in file
      order, so smaller objects end on top).
    path: the annotation file (for messages).

  Returns:
    int32 [height, width]: LVIS category ids, 0 where no object is.
  """
  if paint_order not in PAINT_ORDERS:
    raise core.DataError(f'config.data.paint_order={paint_order!r}; '
                         f'expected one of {PAINT_ORDERS}.')
  h, w = record.height, record.width
  masks = [(cat_id, annotation_mask(
      seg, h, w, path, f'annotation {ann_id} (image {record.image_id})'))
           for ann_id, cat_id, seg in record.annotations]
  if paint_order == 'small_on_top':
    order = sorted(range(len(masks)), key=lambda i: -int(masks[i][1].sum()))
    masks = [masks[i] for i in order]
  label = np.zeros((h, w), np.int32)
  for cat_id, mask in masks:
    label[mask] = cat_id
  return label


def encode_label_png(label: np.ndarray) -> bytes:
  """int [H, W] class ids -> the bytes of a 16-bit grayscale PNG."""
  buffer = io.BytesIO()
  Image.fromarray(label.astype(np.uint16)).save(buffer, format='PNG')
  return buffer.getvalue()


class LvisDataset(core.FolderDataset):
  """LVIS v1 under `data_config.root`; see the module docstring.

  Attributes:
    paint_order: 'file' or 'small_on_top'.
    labels_dir: the folder of prepared label PNGs.
    rasterize_on_the_fly: paint label maps at every read.
  """

  def __init__(self, data_config):
    root = str(data_config.root)
    super().__init__(NAME, root, None,
                     core.ExampleDecoder(NUM_CLASSES))
    self.paint_order = str(_setting(data_config, 'paint_order'))
    if self.paint_order not in PAINT_ORDERS:
      raise core.DataError(f'config.data.paint_order={self.paint_order!r}; '
                           f'expected one of {PAINT_ORDERS}.')
    self._keep = {'train': bool(_setting(data_config,
                                         'keep_unannotated_train')),
                  'val': bool(_setting(data_config, 'keep_unannotated_val'))}
    labels_dir = str(_setting(data_config, 'labels_dir'))
    if not labels_dir and root:
      labels_dir = os.path.join(root, f'lvis_labels_{self.paint_order}')
    self.labels_dir = labels_dir
    self.rasterize_on_the_fly = bool(_setting(data_config,
                                              'rasterize_on_the_fly'))

  def keeps_unannotated(self, split: str) -> bool:
    """Whether images without annotations are examples of `split`."""
    self._check_split(split)
    return self._keep[split]

  def _check_split(self, split: str) -> None:
    if split not in ANNOTATION_FILES:
      raise core.DataError(f'Unknown split {split!r}; expected one of '
                           f'{sorted(ANNOTATION_FILES)}.')
    if not self.root:
      raise core.DataError(f'{self.name}: config.data.root is not set (the '
                           'folder of lvis_v1_*.json, train2017/, val2017/).')

  def annotation_file(self, split: str) -> str:
    self._check_split(split)
    return os.path.join(self.root, ANNOTATION_FILES[split])

  def annotations(self, split: str) -> Annotations:
    """The parsed annotation file of `split` (cached)."""
    return load_annotations(self.annotation_file(split), self.root)

  def label_folder(self, split: str) -> str:
    """Where `prepare` writes the label PNGs of `split`."""
    self._check_split(split)
    return os.path.join(self.labels_dir, f'{split}_label')

  def records(self, split: str,
              problems: Optional[list[core.Problem]] = None, *,
              from_index: bool = False) -> list[Record]:
    """The images of `split` that are examples, sorted by image id.

    Images without annotations are left out unless kept for the split; an
    image whose file is missing is a problem.

    Args:
      split: 'train' or 'val'.
      problems: if given, problems are appended here and the records that
        are fine are returned; otherwise the first problem raises.
      from_index: read light records (without annotations) from the
        prepared folder's index when there is one, rather than parsing the
        annotation file (1 GB for train): what listing the prepared pairs
        needs.

    Raises:
      DataError: one line naming the file (when `problems` is None).
    """
    found = []
    records = []
    try:
      if from_index and self.prepared(split):
        source = self.annotation_file(split)
        all_records = self._index(split)
      else:
        annotations = self.annotations(split)
        source, all_records = annotations.file, annotations.records
    except core.DataError as e:
      if problems is None:
        raise
      problems.append(core.Problem(e.file or self.annotation_file(split),
                                   str(e)))
      return []
    listed = {}
    keep = self.keeps_unannotated(split)
    for record in all_records:
      if not record.num_annotations and not keep:
        continue
      folder = os.path.dirname(record.image)
      if folder not in listed:
        listed[folder] = _list_files(folder)
      if os.path.basename(record.image) not in listed[folder]:
        found.append(core.Problem(record.image, (
            f'{record.image}: image file not found (LVIS image '
            f'{record.image_id} of {source}).')))
        continue
      records.append(record)
    if not records and not found:
      found.append(core.Problem(source, (
          f'{source}: no images to use in the {split} split.')))
    if problems is not None:
      problems.extend(found)
      return records
    if found:
      more = (f' (and {len(found) - 1} more problems; python -m '
              'data_pipelines.inspect lists them all)' if len(found) > 1
              else '')
      raise core.DataError(found[0].message + more, file=found[0].file)
    return records

  def list_pairs(self, split: str,
                 problems: Optional[list[core.Problem]] = None
                 ) -> list[core.Pair]:
    """(image, prepared label PNG) pairs of `split`'s examples."""
    folder = epath.Path(self.label_folder(split))
    return [core.Pair(r.key, r.image, os.fspath(folder / f'{r.key}.png'))
            for r in self.records(split, problems, from_index=True)]

  def _index(self, split: str) -> list[Record]:
    """Light records of every image, from the prepared folder's index."""
    manifest = os.fspath(epath.Path(self.label_folder(split)) / MANIFEST)
    try:
      return [Record(image_id, key, os.path.join(self.root, rel), h, w, (), n)
              for image_id, key, rel, h, w, n in self._read_manifest(
                  split)['images']]
    except (KeyError, TypeError, ValueError) as e:
      raise _fail(manifest, f'malformed index ({e}); delete the folder and '
                  f'run {_PREPARE_COMMAND}.') from e

  def _read_manifest(self, split: str) -> dict[str, Any]:
    manifest = epath.Path(self.label_folder(split)) / MANIFEST
    try:
      return json.loads(manifest.read_text())
    except (OSError, ValueError) as e:
      raise _fail(os.fspath(manifest), f'unreadable ({e}); delete the '
                  f'folder and run {_PREPARE_COMMAND}.') from e

  def prepared(self, split: str) -> bool:
    """Whether `split`'s labels are prepared (raises if for other data)."""
    manifest = epath.Path(self.label_folder(split)) / MANIFEST
    if not manifest.exists():
      return False
    info = self._read_manifest(split)
    expected = self._manifest(split)
    for key in ('paint_order', 'annotation_bytes'):
      if info.get(key) != expected[key]:
        raise _fail(os.fspath(manifest), (
            f'labels prepared with {key}={info.get(key)!r}, not '
            f'{expected[key]!r}; set config.data.labels_dir to another '
            f'folder or delete this one and run {_PREPARE_COMMAND}.'))
    return True

  def _manifest(self, split: str) -> dict[str, Any]:
    path = self.annotation_file(split)
    try:
      size = os.stat(path).st_size
    except OSError as e:
      raise _fail(path, 'LVIS annotation file not found '
                  f'({e.strerror}).') from e
    return {'annotation_file': os.path.basename(path),
            'annotation_bytes': size,
            'paint_order': self.paint_order,
            'format': '16-bit grayscale PNG of LVIS category ids, 0 '
                      'unlabeled'}

  def check_prepared(self, split: str) -> None:
    """DataError (one line) unless `split`'s labels are prepared."""
    if not self.prepared(split):
      folder = self.label_folder(split)
      raise core.DataError(
          f'{folder}: LVIS label maps not prepared (no {MANIFEST}); run '
          f'{_PREPARE_COMMAND} or set config.data.rasterize_on_the_fly=True.',
          file=folder)

  def prepare(self, splits: Sequence[str] = ('train', 'val'),
              num_threads: int = 0, log_progress: bool = False) -> dict:
    """Rasterizes every image of `splits` to a label PNG, once.

    Every image of the annotation file gets a label (those without
    annotations too, so the keep switches need no new preparation); a split
    already prepared with the same settings is skipped.

    Returns:
      split -> number of label PNGs written (0: already prepared).
    """
    written = {}
    for split in splits:
      if self.prepared(split):
        written[split] = 0
        continue
      annotations = self.annotations(split)
      folder = epath.Path(self.label_folder(split))
      folder.mkdir(parents=True, exist_ok=True)

      def write(record, folder=folder, annotations=annotations):
        label = rasterize(record, self.paint_order, annotations.file)
        target = folder / f'{record.key}.png'
        tmp = folder / f'.{record.key}.png.tmp'
        tmp.write_bytes(encode_label_png(label))
        tmp.rename(target)

      threads = num_threads or os.cpu_count() or 1
      start = time.time()
      count = len(annotations.records)
      with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for done, _ in enumerate(pool.map(write, annotations.records), 1):
          if log_progress and (done % 1000 == 0 or done == count):
            print(f'{split}: {done}/{count} label maps '
                  f'({time.time() - start:.0f} s)', file=sys.stderr)
      index = [[r.image_id, r.key, os.path.relpath(r.image, self.root),
                r.height, r.width, r.num_annotations]
               for r in annotations.records]
      (folder / MANIFEST).write_text(json.dumps(
          {**self._manifest(split), 'num_labels': count, 'images': index}))
      written[split] = count
    return written

  def frequency_groups(self, split: str = 'val') -> dict[str, list[int]]:
    """'rare' / 'common' / 'frequent' -> sorted class ids of the group."""
    groups = {name: [] for name in FREQUENCY_GROUPS.values()}
    for cat_id, letter in sorted(self.annotations(split).frequency.items()):
      groups[FREQUENCY_GROUPS[letter]].append(cat_id)
    return groups


def _list_files(folder: str) -> set[str]:
  """Names of the files in `folder` (empty if it does not exist)."""
  try:
    with os.scandir(folder) as entries:
      return {e.name for e in entries}
  except OSError:
    return set()


class RasterizingSource:
  """Grain random-access source painting label maps at every read."""

  def __init__(self, records: Sequence[Record], decoder: core.ExampleDecoder,
               paint_order: str, annotation_file: str):
    self._records = list(records)
    self._decoder = decoder
    self._paint_order = paint_order
    self._file = annotation_file

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    index = int(index) % len(self._records)
    record = self._records[index]
    image = self._decoder.decode_image(core.read_bytes(record.image),
                                       record.image)
    label = rasterize(record, self._paint_order, self._file)
    check_size(record, image)
    return {'image': image, 'label': label, 'index': np.int32(index)}

  def __repr__(self) -> str:
    return f'RasterizingSource({len(self._records)} LVIS images)'


def check_size(record: Record, image: np.ndarray) -> None:
  """DataError unless the image has the size its JSON entry states."""
  if image.shape[:2] != (record.height, record.width):
    raise core.DataError(
        f'{record.image} is {image.shape[1]}x{image.shape[0]} (WxH) but LVIS '
        f'image {record.image_id} is {record.width}x{record.height}.',
        file=record.image)


def make_source(dataset: LvisDataset, split: str, allow_build: bool,
                folder_source):
  """The Grain source of `split`: prepared PNGs, or painted on the fly.

  Args:
    dataset: the data set.
    split: 'train' or 'val'.
    allow_build: prepare the label PNGs if they are missing (else raise).
    folder_source: (pairs, decoder) -> the source reading prepared pairs.
  """
  if dataset.rasterize_on_the_fly:
    return RasterizingSource(dataset.records(split), dataset.decoder,
                             dataset.paint_order,
                             dataset.annotation_file(split))
  pairs = dataset.list_pairs(split)  # Checks the annotations and images.
  if allow_build and not dataset.prepared(split):
    dataset.prepare([split])
  dataset.check_prepared(split)
  return folder_source(pairs, dataset.decoder)


def scan_record(dataset: LvisDataset, split: str, record: Record):
  """(image (w, h), class-id histogram, problems) of one image (inspect)."""
  problems = []
  size = histogram = None
  try:
    image = dataset.decoder.decode_image(core.read_bytes(record.image),
                                         record.image)
    size = (image.shape[1], image.shape[0])
    check_size(record, image)
  except core.DataError as e:
    problems.append(core.Problem(e.file or record.image, str(e)))
  try:
    histogram = np.bincount(rasterize(
        record, dataset.paint_order, dataset.annotation_file(split)).ravel())
  except core.DataError as e:
    problems.append(core.Problem(e.file or record.image, str(e)))
  return size, histogram, problems


def report_extras(dataset: LvisDataset, split: str,
                  histogram: dict[int, int]) -> dict[str, Any]:
  """inspect's LVIS fields: frequency groups, categories, unannotated images.

  Args:
    dataset: the data set.
    split: the scanned split.
    histogram: class id -> pixels over the scanned images.

  Returns:
    {'frequency_groups': {'unlabeled' | 'rare' | 'common' | 'frequent':
    {'pixels', 'share' (of all pixels), 'categories_present',
    'categories'}}, 'num_categories_present', 'num_unannotated_images' (in
    the annotation file), 'unannotated_kept'}; empty if the annotation file
    cannot be read.
  """
  try:
    annotations = dataset.annotations(split)
  except core.DataError:
    return {}
  total = sum(histogram.values()) or 1
  groups = {'unlabeled': {'pixels': int(histogram.get(0, 0)),
                          'categories_present': 0, 'categories': 0}}
  for letter, name in FREQUENCY_GROUPS.items():
    ids = [c for c, f in annotations.frequency.items() if f == letter]
    groups[name] = {
        'pixels': int(sum(histogram.get(c, 0) for c in ids)),
        'categories_present': sum(1 for c in ids if histogram.get(c, 0)),
        'categories': len(ids)}
  for group in groups.values():
    group['share'] = group['pixels'] / total
  return {
      'frequency_groups': groups,
      'num_categories_present': sum(1 for c, n in histogram.items()
                                    if c > 0 and n),
      'num_unannotated_images': sum(1 for r in annotations.records
                                    if not r.annotations),
      'unannotated_kept': dataset.keeps_unannotated(split),
  }


def make_dataset(data_config) -> LvisDataset:
  """The LVIS tree under `data_config.root`.

  Raises:
    DataError: config.data.source='tfds' (LVIS trains from prepared PNGs),
      or an unknown paint order.
  """
  if data_config.source != 'folder':
    raise core.DataError(f"config.data.source={data_config.source!r}: LVIS "
                         "reads its prepared label PNGs; set "
                         "config.data.source='folder'.")
  return LvisDataset(data_config)
