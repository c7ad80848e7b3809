"""A user's own data set: `<root>/images/<split>/<name>.{jpg,png}` with labels.

Labels are `<root>/labels/<split>/<name>.png`, splits `train` and `val`.
Label PNGs hold class ids (single channel: 8-bit, 16-bit or palette mode), or,
with `config.data.palette` (a JSON list of `[r, g, b]` per class id), colours;
`label_maps` states the policy.
`config.data.num_classes` and `config.data.dontcare_id` describe the classes;
sub-folders are allowed (the relative path pairs the files).
"""

from data_pipelines import core
from data_pipelines import label_maps

NAME = 'folder'
NUM_CLASSES = None  # From config.data.num_classes.
LAYOUT = core.Layout(
    image_dir='images/{split}',
    label_dir='labels/{split}',
    image_suffixes=('.jpg', '.jpeg', '.png'),
    label_suffixes=('.png',),
    recursive=True)


def make_dataset(data_config) -> core.FolderDataset:
  """The user's tree under `data_config.root`, with its palette if any."""
  num_classes = int(data_config.num_classes)
  if num_classes < 2:
    raise core.DataError(f'config.data.num_classes={num_classes}; a folder '
                         'data set needs at least 2 classes.')
  dontcare = int(data_config.dontcare_id)
  if not -1 <= dontcare < num_classes:
    raise core.DataError(f'config.data.dontcare_id={dontcare} is not a class '
                         f'id (num_classes={num_classes}) nor -1 (none).')
  palette = None
  if data_config.palette:
    palette = label_maps.load_palette(data_config.palette, num_classes)
  decoder = core.ExampleDecoder(num_classes, None, palette,
                                data_config.palette)
  return core.FolderDataset(NAME, data_config.root, LAYOUT, decoder)
