"""Grain random-access sources of decoded examples: folders and TFDS records.

Both decode the same bytes with the same `core.ExampleDecoder`, so they give
identical examples {'image': uint8 [h, w, 3], 'label': int32 [h, w],
'index': int32}.
"""

import numpy as np

from data_pipelines import core


class FolderSource:
  """Grain random-access source reading pairs straight from the folders."""

  def __init__(self, pairs: list[core.Pair], decoder: core.ExampleDecoder):
    self._pairs = [(p.image, p.label) for p in pairs]
    self._decoder = decoder

  def __len__(self) -> int:
    return len(self._pairs)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    index = int(index) % len(self._pairs)
    image_path, label_path = self._pairs[index]
    image, label = self._decoder(core.read_bytes(image_path),
                                 core.read_bytes(label_path), image_path,
                                 label_path)
    return {'image': image, 'label': label, 'index': np.int32(index)}

  def __repr__(self) -> str:
    return f'FolderSource({len(self._pairs)} pairs)'


class TfdsSource:
  """Grain random-access source decoding records of a TFDS array_record build.
  """

  def __init__(self, data_source, decoder: core.ExampleDecoder,
               description: str = ''):
    self._source = data_source
    self._decoder = decoder
    self._description = description

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    index = int(index) % len(self._source)
    try:
      record = self._source[index]
    except Exception as e:  # pylint: disable=broad-except
      raise core.DataError(f'{self._description}: cannot read record '
                           f'{index} ({type(e).__name__}: {e}).') from e
    image_path = _text(record['image_file'])
    label_path = _text(record['label_file'])
    image, label = self._decoder(record['image_bytes'], record['label_bytes'],
                                 image_path, label_path)
    return {'image': image, 'label': label, 'index': np.int32(index)}

  def __repr__(self) -> str:
    return f'TfdsSource({self._description}, {len(self)} records)'


def _text(value) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)
