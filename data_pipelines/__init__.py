"""Data sets of oasis-jax: layouts, label conventions and Grain sources.

`make_source(config.data, split)` gives a Grain random-access source of
decoded examples {'image': uint8 [h, w, 3], 'label': int32 [h, w] class ids,
'index': int32} at the files' own size, for any data set ('synthetic',
'ade20k', 'cityscapes', 'coco_stuff', 'folder', 'lvis') and either route:
`config.data.source='folder'` reads the prepared tree directly,
`config.data.source='tfds'` reads the array_record build of
`data_pipelines.tfds_builders` with `tfds.data_source` (the two sources are
in sources.py; they give identical examples).
LVIS reads label PNGs prepared once from its annotation files (or paints
them on the fly); see `lvis/`. With `config.data.prepared` set, any data
set is read from the prepared format instead (`prepared/`: resized once,
the same batches as the folder route).
"""

import os
from typing import Optional

from data_pipelines import ade20k
from data_pipelines import cityscapes
from data_pipelines import coco_stuff
from data_pipelines import core
from data_pipelines import folder
from data_pipelines import sources
from data_pipelines import synthetic
from data_pipelines import geometry
from data_pipelines.lvis import dataset as lvis_dataset
from data_pipelines.lvis import sources as lvis_sources
from data_pipelines.prepared import manifest as prepared_manifest
from data_pipelines.prepared import reader as prepared_reader

DataError = core.DataError
SPLITS = ('train', 'val')
FOLDER_DATASETS = {m.NAME: m for m in (ade20k, cityscapes, coco_stuff, folder,
                                       lvis_dataset)}
DATASETS = ('synthetic',) + tuple(FOLDER_DATASETS)
SOURCES = ('folder', 'tfds')  # config.data.source: how the files are read.


def get_dataset(data_config) -> core.FolderDataset:
  """The prepared-folder data set named by `data_config.name`.

  Raises:
    DataError: an unknown name, or a num_classes that contradicts the data
      set's label convention.
  """
  name = data_config.name
  if name not in FOLDER_DATASETS:
    raise DataError(f'config.data.name={name!r} is not a folder data set; '
                    f'expected one of {sorted(FOLDER_DATASETS)}.')
  module = FOLDER_DATASETS[name]
  fixed = module.NUM_CLASSES
  if fixed is not None and int(data_config.num_classes) != fixed:
    raise DataError(f'config.data.num_classes={data_config.num_classes} but '
                    f'{name} has {fixed} class ids; set '
                    f'--config.data.num_classes={fixed}.')
  return module.make_dataset(data_config)


def _check_split(split: str) -> None:
  if split not in SPLITS:
    raise DataError(f'Unknown split {split!r}; expected one of {SPLITS}.')


def tfds_data_dir(data_config) -> str:
  """Where the array_record build lives ('' -> `<root>/tfds`)."""
  if data_config.tfds_data_dir:
    return data_config.tfds_data_dir
  if not data_config.root:
    raise DataError('Set config.data.tfds_data_dir (or config.data.root) for '
                    "config.data.source='tfds'.")
  return os.path.join(data_config.root, 'tfds')


def tfds_builder(data_config):
  """The TFDS builder of `data_config.name` (under `tfds_data_dir`)."""
  # Imported here: TFDS is needed only by this route.
  # pylint: disable-next=g-import-not-at-top
  from data_pipelines import tfds_builders
  if data_config.name not in tfds_builders.BUILDERS:
    raise DataError(f"config.data.source='tfds' is not available for "
                    f"{data_config.name!r}; set config.data.source='folder'.")
  builder_cls = tfds_builders.BUILDERS[data_config.name]
  return builder_cls(data_dir=tfds_data_dir(data_config),
                     file_format='array_record')


def build_tfds(data_config):
  """Builds (once) the array_record splits from `data_config.root`."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  get_dataset(data_config)  # Checks the name and the class count.
  if not data_config.root:
    raise DataError('config.data.root is not set (the prepared folder the '
                    'TFDS build reads).')
  builder = tfds_builder(data_config)
  if not builder.is_prepared():
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=data_config.root))
  return builder


def prepared_source(data_config, split: str) -> prepared_reader.PreparedSource:
  """The source of a prepared folder (`config.data.prepared`), checked.

  Items are the folder route's examples after the recipe's resize (train:
  to the load size, or the image size without a random crop; val: to the
  image size), so the same crop and flip give the same batches.

  Raises:
    DataError: one line, for a missing or unfinished folder, another
      recipe (naming the key and both values), a source tree (when
      config.data.root is set) changed since preparing, or a missing,
      truncated or damaged shard.
  """
  folder = data_config.prepared
  manifest = prepared_manifest.read_manifest(folder)
  dataset = get_dataset(data_config)
  prepared_manifest.check(
      {'format_version': manifest.get('format_version'),
       'recipe': manifest.get('recipe')},
      {'format_version': prepared_manifest.FORMAT_VERSION,
       'recipe': prepared_manifest.recipe(data_config, dataset)},
      folder, 'this config')
  if data_config.root and split in manifest.get('splits', {}):
    prepared_manifest.check(
        {'fingerprint': manifest['splits'][split]['fingerprint']},
        {'fingerprint': prepared_manifest.fingerprint(
            dataset.root, prepared_manifest.source_files(dataset, split))},
        folder, f'the {split} files under config.data.root now')
  return prepared_reader.PreparedSource(folder, split, manifest)


def make_source(data_config, split: str, *, allow_build: bool = True):
  """A Grain random-access source of decoded examples of `split`.

  Args:
    data_config: `config.data`.
    split: 'train' or 'val'.
    allow_build: route 'tfds' only: build the array_record files from
      `data_config.root` if they are missing (else raise).

  Returns:
    A source whose items are {'image': uint8 [h, w, 3], 'label': int32 [h, w]
    class ids after the data set's remapping, 'index': int32 position in the
    split}; synthetic examples already have the configured size.

  Raises:
    DataError: naming the folder or file, for a missing or empty split,
      unpaired files, a wrong config (name, num_classes, palette, source).
  """
  _check_split(split)
  if data_config.name == 'synthetic':
    n = int(data_config.synthetic_num_examples)
    if n <= 0:
      raise DataError(f'config.data.synthetic_num_examples={n}; it must be '
                      'positive.')
    return synthetic.SyntheticSource(
        n, geometry.image_hw(data_config), int(data_config.num_classes),
        int(data_config.dontcare_id), int(data_config.synthetic_seed), split)
  if data_config.prepared:
    return prepared_source(data_config, split)
  dataset = get_dataset(data_config)
  if data_config.name == lvis_dataset.NAME:
    return lvis_sources.make_source(dataset, split, allow_build,
                                    sources.FolderSource)
  if data_config.source == 'folder':
    return sources.FolderSource(dataset.list_pairs(split), dataset.decoder)
  if data_config.source != 'tfds':
    raise DataError(f"config.data.source={data_config.source!r}; expected "
                    "'folder' or 'tfds'.")
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds_builder(data_config)
  if not builder.is_prepared():
    if not allow_build:
      raise DataError(
          f'No TFDS build of {data_config.name} in {tfds_data_dir(data_config)}'
          '; build it first: python -m data_pipelines.build --config=... '
          '--config.data.root=DIR --config.data.tfds_data_dir=OUT.')
    builder = build_tfds(data_config)
  if split not in builder.info.splits:
    raise DataError(f'{builder.data_dir}: the TFDS build has no {split!r} '
                    f'split (it has {sorted(builder.info.splits)}).')
  source = tfds.data_source(builder.name, split=split,
                            data_dir=tfds_data_dir(data_config),
                            download=False)
  if not len(source):  # pylint: disable=g-explicit-length-test
    raise DataError(f'{builder.data_dir}: empty split {split!r}.')
  return sources.TfdsSource(source, dataset.decoder,
                            f'{builder.data_dir} ({split})')


def num_examples(data_config, split: str) -> int:
  """Number of examples of `split` (pairs in the folder, records in TFDS)."""
  _check_split(split)
  if data_config.name == 'synthetic':
    return int(data_config.synthetic_num_examples)
  if data_config.prepared:
    manifest = prepared_manifest.read_manifest(data_config.prepared)
    if split not in manifest.get('splits', {}):
      raise DataError(f'{data_config.prepared}: no {split!r} split prepared.')
    return int(manifest['splits'][split]['num_records'])
  if data_config.source == 'tfds':
    builder = tfds_builder(data_config)
    if builder.is_prepared():
      if split not in builder.info.splits:
        raise DataError(f'{builder.data_dir}: the TFDS build has no '
                        f'{split!r} split.')
      return int(builder.info.splits[split].num_examples)
  return len(get_dataset(data_config).list_pairs(split))


def class_groups(data_config) -> Optional[dict[str, list[int]]]:
  """Named groups of class ids to score separately, or None.

  LVIS: its categories by frequency, {'rare', 'common', 'frequent'} -> ids
  (from the val annotation file). Other data sets: None.
  """
  if data_config.name != lvis_dataset.NAME:
    return None
  return get_dataset(data_config).frequency_groups('val')
