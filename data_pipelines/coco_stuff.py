"""COCO-Stuff (182 things and stuff + unlabeled) as prepared for SPADE/OASIS.

Layout: `{train,val}_img/<12 digits>.jpg` with `{train,val}_label/<12
digits>.png`. Label PNG value v becomes class id v + 1, and 255 (unlabeled)
becomes 0, the don't-care class: 183 class ids in all.
"""

import numpy as np

from data_pipelines import core

NAME = 'coco_stuff'
NUM_CLASSES = 183
# The official recipe's config.data values (docs/labels.md).
RECIPE = dict(num_classes=NUM_CLASSES, dontcare_id=0, image_size=256,
              aspect_ratio=1.0, load_size=286, random_crop=True,
              random_flip=True)
LAYOUT = core.Layout(
    image_dir='{split}_img',
    label_dir='{split}_label',
    image_suffixes=('.jpg',),
    label_suffixes=('.png',))


def remap_labels(raw: np.ndarray) -> np.ndarray:
  """PNG values -> class ids: v -> v + 1, 255 -> 0."""
  ids = raw.astype(np.int32) + 1
  ids[ids == 256] = 0
  return ids


def make_dataset(data_config) -> core.FolderDataset:
  """The COCO-Stuff tree under `data_config.root`."""
  return core.FolderDataset(NAME, data_config.root, LAYOUT,
                            core.ExampleDecoder(NUM_CLASSES, remap_labels))
