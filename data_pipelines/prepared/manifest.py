"""What a prepared folder was made from: recipe, source fingerprint, shards.

`DIR/prepared.json` is written last, once every shard of every split is
complete: {'format_version', 'recipe' (what changes the stored arrays),
'compression', 'splits': {split: {'num_records', 'bytes', 'fingerprint'
(names and sizes of the source files, hashed), 'shards': [{'file',
'records', 'bytes', 'sha256'}]}}}. A run reading the folder compares the
recipe its config gives, key by key, and the fingerprint of the source tree
(when config.data.root is set), and refuses any difference in one line.
"""

import hashlib
import json
import os
from typing import Any, Iterable

from data_pipelines import errors
from data_pipelines import geometry
from data_pipelines.lvis import dataset as lvis_dataset

FORMAT_VERSION = 1
MANIFEST = 'prepared.json'
PLAN = 'plan.json'  # Written first: the recipe and shards being prepared.
IMAGE_RESIZE = 'bicubic (Pillow)'
LABEL_RESIZE = 'nearest (Pillow)'
# How label PNG values become class ids, by data set (docs/labels.md).
REMAPS = {
    'ade20k': 'PNG value = class id',
    'cityscapes': 'labelIds = class id',
    'coco_stuff': 'PNG value v -> v + 1, 255 -> 0',
    'folder': 'PNG value = class id',
    'lvis': 'painted LVIS category ids, 0 unlabeled',
}


def split_hw(data_config, split: str) -> tuple[int, int]:
  """(H, W) a split is stored at: the train resize before the crop, or the
  network size (val, and train without a random crop)."""
  if split == 'train' and data_config.random_crop:
    return geometry.load_hw(data_config)
  return geometry.image_hw(data_config)


def file_sha256(path: str) -> str:
  """The SHA-256 of a file, read in 1 MiB blocks."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def recipe(data_config, dataset) -> dict[str, Any]:
  """Everything that decides the stored arrays, from the run's config.

  Args:
    data_config: `config.data`.
    dataset: its `core.FolderDataset`.
  """
  remap = REMAPS[dataset.name]
  palette = data_config.palette if dataset.name == 'folder' else ''
  if palette:
    remap = f'palette colours -> ids (sha256 {file_sha256(palette)[:16]})'
  out = {
      'dataset': dataset.name,
      'num_classes': int(dataset.num_classes),
      'train_hw': list(split_hw(data_config, 'train')),
      'val_hw': list(split_hw(data_config, 'val')),
      'image_resize': IMAGE_RESIZE,
      'label_resize': LABEL_RESIZE,
      'remap': remap,
  }
  if dataset.name == lvis_dataset.NAME:
    out['paint_order'] = dataset.paint_order
    for key in ('keep_unannotated_train', 'keep_unannotated_val'):
      out[key] = bool(data_config.get(key, lvis_dataset.DEFAULTS[key]))
  return out


def fingerprint(root: str, paths: Iterable[str]) -> dict[str, Any]:
  """{'files', 'bytes', 'sha256'} of (name relative to root, size) of files.

  Cheap (one stat per file), and it changes when a file is added, removed,
  renamed or changes size.
  """
  digest = hashlib.sha256()
  count = total = 0
  for path in sorted(paths):
    try:
      size = os.stat(path).st_size
    except OSError as e:
      raise errors.DataError(f'{path}: cannot read the file ({e}).',
                             file=path) from e
    digest.update(f'{os.path.relpath(path, root)}\t{size}\n'.encode())
    count += 1
    total += size
  return {'files': count, 'bytes': total, 'sha256': digest.hexdigest()}


def first_difference(made: dict[str, Any], wanted: dict[str, Any],
                     prefix: str = '') -> tuple[str, Any, Any] | None:
  """(dotted key, made value, wanted value) of the first difference."""
  for key in sorted(set(made) | set(wanted)):
    a, b = made.get(key), wanted.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      found = first_difference(a, b, f'{prefix}{key}.')
      if found:
        return found
    elif a != b:
      return f'{prefix}{key}', a, b
  return None


def read_json(path: str, what: str) -> dict[str, Any]:
  """A JSON object from `path`; `DataError` naming it otherwise."""
  try:
    with open(path) as f:
      data = json.load(f)
  except FileNotFoundError as e:
    raise errors.DataError(f'{path}: not found ({what}).', file=path) from e
  except (OSError, ValueError) as e:
    raise errors.DataError(f'{path}: unreadable ({what}: {e}).',
                           file=path) from e
  if not isinstance(data, dict):
    raise errors.DataError(f'{path}: not a JSON object ({what}).', file=path)
  return data


def write_json(path: str, data: dict[str, Any]) -> None:
  """Writes `data` to a temporary name, then renames it (atomic)."""
  tmp = f'{path}.tmp-{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(data, f, indent=1, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def read_manifest(folder: str) -> dict[str, Any]:
  """The manifest of a prepared folder.

  Raises:
    DataError: one line, for a missing folder, an unfinished preparation or
      an unreadable manifest.
  """
  if not os.path.isdir(folder):
    raise errors.DataError(f'config.data.prepared={folder}: folder not found '
                           '(python -m data_pipelines.prepare --out=DIR '
                           'writes it).', file=folder)
  path = os.path.join(folder, MANIFEST)
  if not os.path.exists(path):
    raise errors.DataError(f'{folder}: no {MANIFEST}: the preparation did not '
                           'finish; run python -m data_pipelines.prepare '
                           'again with the same --out.', file=folder)
  return read_json(path, 'the prepared folder manifest')


def check(manifest: dict[str, Any], wanted: dict[str, Any], folder: str,
          what: str, hint: str = 'Prepare again (python -m '
          'data_pipelines.prepare) or use the matching config.') -> None:
  """`DataError` naming the first key where `manifest` differs from `wanted`.

  Args:
    manifest: the recorded values.
    wanted: the values this run gives.
    folder: the prepared folder (for the message).
    what: where `wanted` comes from, e.g. 'this config'.
    hint: what to do about it.
  """
  found = first_difference(manifest, wanted)
  if found:
    key, made, want = found
    raise errors.DataError(
        f'{folder} was prepared with {key}={made!r}; {what}: {want!r}. '
        f'{hint}', file=folder)


def _files_in(folder: str) -> list[str]:
  try:
    with os.scandir(folder) as entries:
      return [e.path for e in entries if e.is_file()]
  except OSError:
    return []


def source_files(dataset, split: str) -> list[str]:
  """The source files a split is prepared from (what `fingerprint` hashes).

  LVIS: its annotation file and every file of the COCO image folders; other
  data sets: the images and labels of the split's pairs.
  """
  if dataset.name == lvis_dataset.NAME:
    return [dataset.annotation_file(split)] + [
        path for folder in ('train2017', 'val2017')
        for path in _files_in(os.path.join(dataset.root, folder))]
  return [path for pair in dataset.list_pairs(split)
          for path in (pair.image, pair.label)]
