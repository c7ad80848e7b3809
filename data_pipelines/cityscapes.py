"""Cityscapes (fine annotations, 35 label ids) as prepared for SPADE/OASIS.

Layout: `leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png`
with `gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png`
(the other gtFine files are ignored). Label ids are the PNG values as they
are (0 = unlabeled, ..., 33); trained at 256x512 without cropping.
"""

from data_pipelines import core

NAME = 'cityscapes'
NUM_CLASSES = 35
# The official recipe's config.data values (docs/labels.md).
RECIPE = dict(num_classes=NUM_CLASSES, dontcare_id=0, image_size=512,
              aspect_ratio=2.0, load_size=512, random_crop=False,
              random_flip=True)
LAYOUT = core.Layout(
    image_dir='leftImg8bit/{split}',
    label_dir='gtFine/{split}',
    image_suffixes=('_leftImg8bit.png',),
    label_suffixes=('_gtFine_labelIds.png',),
    recursive=True)


def remap_labels(raw):
  """Cityscapes keeps labelIds as class ids."""
  return raw


def make_dataset(data_config) -> core.FolderDataset:
  """The Cityscapes tree under `data_config.root`."""
  return core.FolderDataset(NAME, data_config.root, LAYOUT,
                            core.ExampleDecoder(NUM_CLASSES))
