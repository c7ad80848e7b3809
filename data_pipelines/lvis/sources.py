"""Grain sources of LVIS: prepared label PNGs, or maps painted at each read."""

from typing import Sequence

import numpy as np

from data_pipelines import core
from data_pipelines.lvis import annotations as lvis_annotations
from data_pipelines.lvis import dataset as lvis_dataset
from data_pipelines.lvis import rasterize as lvis_rasterize


class RasterizingSource:
  """Grain random-access source painting label maps at every read."""

  def __init__(self, records: Sequence[lvis_annotations.Record],
               decoder: core.ExampleDecoder, paint_order: str,
               annotation_file: str):
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
    label = lvis_rasterize.rasterize(record, self._paint_order, self._file)
    check_size(record, image)
    return {'image': image, 'label': label, 'index': np.int32(index)}

  def __repr__(self) -> str:
    return f'RasterizingSource({len(self._records)} LVIS images)'


def check_size(record: lvis_annotations.Record, image: np.ndarray) -> None:
  """DataError unless the image has the size its JSON entry states."""
  if image.shape[:2] != (record.height, record.width):
    raise core.DataError(
        f'{record.image} is {image.shape[1]}x{image.shape[0]} (WxH) but LVIS '
        f'image {record.image_id} is {record.width}x{record.height}.',
        file=record.image)


def make_source(dataset: lvis_dataset.LvisDataset, split: str,
                allow_build: bool, folder_source):
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
