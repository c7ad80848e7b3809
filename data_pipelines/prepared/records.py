"""One prepared record: a pair's name, resized image and class ids, checked.

Layout (little endian): magic b'OPR1', crc32 of the rest (uint32), height and
width (uint16 each), bytes per class id (uint8: 1 or 2), name length
(uint16); then the name (UTF-8), the image (uint8 [h, w, 3]) and the label
(uint8 or uint16 [h, w]). The crc32 costs ~0.07 ms for 286x286 and means a
damaged record is an error, never data.
"""

import struct
import zlib

import numpy as np

from data_pipelines import errors

MAGIC = b'OPR1'
_HEADER = struct.Struct('<4sIHHBH')
_BODY_START = 4 + 4  # The crc32 covers everything after the magic and itself.


def label_dtype(num_classes: int) -> np.dtype:
  """The narrowest stored dtype of class ids < num_classes."""
  return np.dtype(np.uint8 if num_classes <= 256 else '<u2')


def encode(name: str, image: np.ndarray, label: np.ndarray,
           dtype: np.dtype) -> bytes:
  """The record of one pair.

  Args:
    name: the pair's key.
    image: uint8 [h, w, 3].
    label: int [h, w] class ids (they fit `dtype`).
    dtype: the stored class-id dtype (`label_dtype`).
  """
  h, w = label.shape
  if image.shape != (h, w, 3) or image.dtype != np.uint8:
    raise ValueError(f'{name}: image {image.shape} {image.dtype} does not '
                     f'match its label {label.shape}.')
  encoded_name = name.encode('utf-8')
  body = (struct.pack('<HHBH', h, w, dtype.itemsize, len(encoded_name)) +
          encoded_name + image.tobytes() + label.astype(dtype).tobytes())
  return MAGIC + struct.pack('<I', zlib.crc32(body)) + body


def decode(data: bytes, where: str) -> tuple[str, np.ndarray, np.ndarray]:
  """(name, uint8 [h, w, 3] image, int32 [h, w] class ids) of a record.

  Raises:
    DataError: naming `where`, for a damaged record (wrong magic, size or
      checksum).
  """
  if len(data) < _HEADER.size or data[:4] != MAGIC:
    raise errors.DataError(f'{where}: not a prepared record (damaged shard; '
                           'prepare again).', file=where)
  _, crc, h, w, itemsize, name_len = _HEADER.unpack_from(data)
  if zlib.crc32(memoryview(data)[_BODY_START:]) != crc:
    raise errors.DataError(f'{where}: checksum mismatch (damaged shard; '
                           'prepare again).', file=where)
  pixels = h * w
  start = _HEADER.size + name_len
  if len(data) != start + pixels * (3 + itemsize) or itemsize not in (1, 2):
    raise errors.DataError(f'{where}: record of the wrong size (damaged '
                           'shard; prepare again).', file=where)
  name = data[_HEADER.size:start].decode('utf-8')
  image = np.frombuffer(data, np.uint8, pixels * 3, start).reshape(h, w, 3)
  dtype = np.uint8 if itemsize == 1 else np.dtype('<u2')
  label = np.frombuffer(data, dtype, pixels, start + pixels * 3)
  return name, image.copy(), label.reshape(h, w).astype(np.int32)
