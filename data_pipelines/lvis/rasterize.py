"""Label maps painted from LVIS annotations' polygons or RLE (pycocotools)."""

import io

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from data_pipelines import core
from data_pipelines.lvis import annotations as lvis_annotations

PAINT_ORDERS = ('file', 'small_on_top')


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
        raise lvis_annotations.error(
            path, f'{what} has an RLE of size {size}; the image is '
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
    raise lvis_annotations.error(
        path, f'{what}: pycocotools cannot decode its segmentation '
        f'({type(e).__name__}: {e}).') from e


def rasterize(record: lvis_annotations.Record, paint_order: str = 'file',
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
