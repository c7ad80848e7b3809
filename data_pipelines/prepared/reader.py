"""Reading a prepared split: a Grain random-access source over its shards.

Opening checks that every shard is there at the size the manifest records
(a truncated or missing shard is one line); every record carries a crc32
that is checked at each read (a damaged record is one line, never data).
`verify` also compares each shard's SHA-256 (what `inspect` runs).
"""

import os
from typing import Any

try:
  import grain  # pylint: disable=g-import-not-at-top
except ImportError:  # Only reading a prepared folder needs it.
  grain = None
import numpy as np

from data_pipelines import errors
from data_pipelines.prepared import manifest as manifest_lib
from data_pipelines.prepared import records


def shard_paths(folder: str, split: str,
                manifest: dict[str, Any]) -> list[str]:
  """The shard files of `split`, checked to exist at their recorded size.

  Raises:
    DataError: one line naming a missing split, or a missing, truncated or
      overlong shard.
  """
  splits = manifest.get('splits', {})
  if split not in splits:
    raise errors.DataError(f'{folder}: no {split!r} split prepared (it has '
                           f'{sorted(splits)}).', file=folder)
  paths = []
  for shard in splits[split]['shards']:
    path = os.path.join(folder, split, shard['file'])
    try:
      size = os.path.getsize(path)
    except OSError as e:
      raise errors.DataError(f'{path}: shard missing ({e.strerror}); '
                             'prepare again.', file=path) from e
    if size != shard['bytes']:
      raise errors.DataError(
          f'{path}: shard is {size} bytes, the manifest records '
          f"{shard['bytes']} (truncated or damaged); prepare again.",
          file=path)
    paths.append(path)
  return paths


def verify(folder: str, split: str,
           manifest: dict[str, Any]) -> list[str]:
  """Problems (one line each) of `split`'s shards: size and SHA-256."""
  problems = []
  try:
    paths = shard_paths(folder, split, manifest)
  except errors.DataError as e:
    return [str(e)]
  for path, shard in zip(paths, manifest['splits'][split]['shards']):
    if manifest_lib.file_sha256(path) != shard['sha256']:
      problems.append(f'{path}: SHA-256 differs from the manifest (damaged '
                      'shard); prepare again.')
  return problems


class PreparedSource:
  """Grain random-access source of a prepared split.

  Items are {'image': uint8 [h, w, 3], 'label': int32 [h, w] class ids,
  'index': int32}, at the split's stored size. Picklable: each process
  (Grain worker) opens the shards itself, on its first read.
  """

  def __init__(self, folder: str, split: str, manifest: dict[str, Any]):
    self._paths = shard_paths(folder, split, manifest)
    self._length = int(manifest['splits'][split]['num_records'])
    self._description = f'{folder} ({split})'
    self._source = None

  def __len__(self) -> int:
    return self._length

  def __getstate__(self):
    return {**self.__dict__, '_source': None}

  def _read(self, index: int) -> bytes:
    try:
      if self._source is None:
        if grain is None:
          raise ImportError('reading a prepared folder needs grain '
                            '(pip install grain)')
        self._source = grain.sources.ArrayRecordDataSource(self._paths)
      return self._source[index]
    except Exception as e:  # pylint: disable=broad-except
      raise errors.DataError(
          f'{self._description}: cannot read record {index} '
          f'({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""})'
          '; damaged shard, prepare again.', file=self._description) from e

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    index = int(index) % self._length
    _, image, label = records.decode(
        self._read(index), f'{self._description} record {index}')
    return {'image': image, 'label': label, 'index': np.int32(index)}

  def __repr__(self) -> str:
    return f'PreparedSource({self._description}, {self._length} records)'
