"""What `python -m data_pipelines.inspect` reports of LVIS: scans, groups."""

from typing import Any

import numpy as np

from data_pipelines import core
from data_pipelines.lvis import annotations as lvis_annotations
from data_pipelines.lvis import dataset as lvis_dataset
from data_pipelines.lvis import rasterize as lvis_rasterize
from data_pipelines.lvis import sources as lvis_sources


def scan_record(dataset: lvis_dataset.LvisDataset, split: str,
                record: lvis_annotations.Record):
  """(image (w, h), class-id histogram, problems) of one image (inspect)."""
  problems = []
  size = histogram = None
  try:
    image = dataset.decoder.decode_image(core.read_bytes(record.image),
                                         record.image)
    size = (image.shape[1], image.shape[0])
    lvis_sources.check_size(record, image)
  except core.DataError as e:
    problems.append(core.Problem(e.file or record.image, str(e)))
  try:
    histogram = np.bincount(lvis_rasterize.rasterize(
        record, dataset.paint_order, dataset.annotation_file(split)).ravel())
  except core.DataError as e:
    problems.append(core.Problem(e.file or record.image, str(e)))
  return size, histogram, problems


def report_extras(dataset: lvis_dataset.LvisDataset, split: str,
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
  for letter, name in lvis_annotations.FREQUENCY_GROUPS.items():
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
