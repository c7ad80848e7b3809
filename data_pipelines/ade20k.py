"""ADE20K (SceneParsing, 150 classes) as prepared for SPADE/OASIS.

Layout: `images/{training,validation}/ADE_*_<8 digits>.jpg` with
`annotations/{training,validation}/ADE_*_<8 digits>.png`. Label PNG values are
the class ids as they are: 0 = unlabeled (don't care), 1..150.
"""

from data_pipelines import core

NAME = 'ade20k'
NUM_CLASSES = 151
# The official recipe's config.data values (docs/labels.md).
RECIPE = dict(num_classes=NUM_CLASSES, dontcare_id=0, image_size=256,
              aspect_ratio=1.0, load_size=286, random_crop=True,
              random_flip=True)
LAYOUT = core.Layout(
    image_dir='images/{split}',
    label_dir='annotations/{split}',
    image_suffixes=('.jpg',),
    label_suffixes=('.png',),
    split_dirs={'train': 'training', 'val': 'validation'})


def remap_labels(raw):
  """ADE20K keeps PNG values as class ids."""
  return raw


def make_dataset(data_config) -> core.FolderDataset:
  """The ADE20K tree under `data_config.root`."""
  return core.FolderDataset(NAME, data_config.root, LAYOUT,
                            core.ExampleDecoder(NUM_CLASSES))
