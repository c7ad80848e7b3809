"""LVIS v1 annotation files: parsed, checked and cached as Records."""

import dataclasses
import json
import os
import threading
from typing import Any

from data_pipelines import core

NUM_CATEGORIES = 1203
# The `frequency` field of an LVIS category -> its group.
FREQUENCY_GROUPS = {'r': 'rare', 'c': 'common', 'f': 'frequent'}


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



def error(path: str, message: str) -> core.DataError:
  return core.DataError(f'{path}: {message}', file=path)


def _int(value, path: str, what: str) -> int:
  if isinstance(value, bool) or not isinstance(value, int):
    raise error(path, f'{what} is {value!r}; expected an integer.')
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
    raise error(path, f'malformed JSON ({e}).') from e
  if not isinstance(data, dict):
    raise error(path, 'not an LVIS annotation file (expected a JSON object '
                'with images, annotations and categories).')
  for field in ('images', 'annotations', 'categories'):
    if not isinstance(data.get(field), list):
      raise error(path, f'not an LVIS annotation file (no {field!r} list).')
  frequency = {}
  try:
    for cat in data['categories']:
      cat_id = _int(cat['id'], path, 'a category id')
      if not 1 <= cat_id <= NUM_CATEGORIES:
        raise error(path, f'category id {cat_id} is outside 1..'
                    f'{NUM_CATEGORIES} (LVIS v1).')
      if cat.get('frequency') not in FREQUENCY_GROUPS:
        raise error(path, f'category {cat_id} has frequency '
                    f'{cat.get("frequency")!r}; expected one of '
                    f'{sorted(FREQUENCY_GROUPS)}.')
      frequency[cat_id] = cat['frequency']
    images = {}
    for img in data['images']:
      image_id = _int(img['id'], path, 'an image id')
      url = img.get('coco_url')
      parts = url.rstrip('/').split('/') if isinstance(url, str) else []
      if len(parts) < 2:
        raise error(path, f'image {image_id} has coco_url {url!r}; expected '
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
        raise error(path, f'annotation {ann_id} (image {image_id}) has '
                    f'category_id {cat_id!r}; LVIS v1 category ids are 1..'
                    f'{NUM_CATEGORIES}.')
      if image_id not in grouped:
        raise error(path, f'annotation {ann_id} refers to image {image_id!r}'
                    ', which is not in the images list.')
      grouped[image_id].append((ann_id, cat_id, ann['segmentation']))
  except KeyError as e:
    raise error(path, f'an entry lacks the field {e.args[0]!r} (LVIS v1 '
                'schema).') from e
  except TypeError as e:
    raise error(path, f'not in the LVIS v1 schema ({e}).') from e
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
    raise error(path, f'LVIS annotation file not found ({e.strerror}).') from e
  key = (root, stat.st_size, stat.st_mtime_ns)
  with _CACHE_LOCK:
    if path in _CACHE and _CACHE[path][0] == key:
      return _CACHE[path][1]
  text = core.read_bytes(path).decode('utf-8', errors='replace')
  annotations = parse_annotations(text, path, root)
  with _CACHE_LOCK:
    _CACHE[path] = (key, annotations)
  return annotations
