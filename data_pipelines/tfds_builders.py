"""TFDS builders (array_record, no TensorFlow) for the prepared folders.

Each builder's manual directory is a prepared data set folder (the layouts of
`data_pipelines.<name>`); it stores, per pair in sorted order, the encoded
image and label files as they are, their paths and the pair's index, so that
reading a record and decoding it with the data set's `ExampleDecoder` gives
exactly what the folder route gives. Shuffling at write time is disabled:
record i is pair i of the sorted listing.

Build with `python -m data_pipelines.build --config=... --config.data.root=DIR
--config.data.tfds_data_dir=OUT`, then train with `--config.data.source=tfds`.
"""

from typing import ClassVar

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import ade20k
from data_pipelines import cityscapes
from data_pipelines import coco_stuff
from data_pipelines import core
from data_pipelines import folder


class _PairedFolderBuilder(tfds.core.GeneratorBasedBuilder,
                           skip_registration=True):
  """Builds the splits of a prepared folder into array_record files."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Encoded image and label files in sorted order.'}
  LAYOUT: ClassVar[core.Layout]
  DATASET: ClassVar[str]

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS's own lookup needs the `importlib_resources` backport for a
    # builder inside a package; the answer is this file.
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=f'{self.DATASET} image/label pairs as encoded files.',
        disable_shuffling=True,
        features=tfds.features.FeaturesDict({
            'image_bytes': tfds.features.Tensor(shape=(), dtype=np.object_),
            'label_bytes': tfds.features.Tensor(shape=(), dtype=np.object_),
            'image_file': tfds.features.Text(),
            'label_file': tfds.features.Text(),
            'index': tfds.features.Scalar(dtype=np.int64),
        }))

  def _split_generators(self, dl_manager):
    root = dl_manager.manual_dir
    generators = {}
    for split in ('train', 'val'):
      image_dir, _ = self.LAYOUT.dirs(root, split)
      if split == 'val' and not image_dir.is_dir():
        continue  # A folder data set may come without a val split.
      pairs = core.list_pairs(self.LAYOUT, root, split,
                              dataset_name=self.DATASET)
      generators[split] = self._generate_examples(pairs)
    return generators

  def _generate_examples(self, pairs):
    for index, pair in enumerate(pairs):
      yield index, {
          'image_bytes': core.read_bytes(pair.image),
          'label_bytes': core.read_bytes(pair.label),
          'image_file': pair.image,
          'label_file': pair.label,
          'index': index,
      }


class OasisAde20k(_PairedFolderBuilder):
  """ADE20K as prepared for SPADE/OASIS."""
  name = 'oasis_ade20k'
  LAYOUT = ade20k.LAYOUT
  DATASET = ade20k.NAME
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'ADE20K folder: images/{training,validation}/*.jpg, '
      'annotations/{training,validation}/*.png.')


class OasisCocoStuff(_PairedFolderBuilder):
  """COCO-Stuff as prepared for SPADE/OASIS."""
  name = 'oasis_coco_stuff'
  LAYOUT = coco_stuff.LAYOUT
  DATASET = coco_stuff.NAME
  MANUAL_DOWNLOAD_INSTRUCTIONS = ('COCO-Stuff folder: {train,val}_img/*.jpg, '
                                  '{train,val}_label/*.png.')


class OasisCityscapes(_PairedFolderBuilder):
  """Cityscapes (gtFine labelIds) as prepared for SPADE/OASIS."""
  name = 'oasis_cityscapes'
  LAYOUT = cityscapes.LAYOUT
  DATASET = cityscapes.NAME
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Cityscapes folder: leftImg8bit/{train,val}/<city>/*_leftImg8bit.png, '
      'gtFine/{train,val}/<city>/*_gtFine_labelIds.png.')


class OasisFolder(_PairedFolderBuilder):
  """A user's folder data set (images/<split>, labels/<split>)."""
  name = 'oasis_folder'
  LAYOUT = folder.LAYOUT
  DATASET = folder.NAME
  MANUAL_DOWNLOAD_INSTRUCTIONS = ('Data folder: images/{train,val}/*.{jpg,png}'
                                  ', labels/{train,val}/*.png.')


BUILDERS = {
    ade20k.NAME: OasisAde20k,
    coco_stuff.NAME: OasisCocoStuff,
    cityscapes.NAME: OasisCityscapes,
    folder.NAME: OasisFolder,
}
