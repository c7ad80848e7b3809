"""The LVIS data set: config fields, splits, records, prepared label PNGs."""

import concurrent.futures
import json
import os
import sys
import time
from typing import Any, Optional, Sequence

from etils import epath

from data_pipelines import core
from data_pipelines.lvis import annotations as lvis_annotations
from data_pipelines.lvis import rasterize as lvis_rasterize

NAME = 'lvis'
NUM_CLASSES = lvis_annotations.NUM_CATEGORIES + 1  # With the unlabeled id 0.
# The COCO-Stuff recipe's config.data values (docs/recipes.md).
RECIPE = dict(num_classes=NUM_CLASSES, dontcare_id=0, image_size=256,
              aspect_ratio=1.0, load_size=286, random_crop=True,
              random_flip=True)
ANNOTATION_FILES = {'train': 'lvis_v1_train.json', 'val': 'lvis_v1_val.json'}
# config.data fields of LVIS (configs/lvis.py) and their values when absent.
DEFAULTS = {
    'paint_order': 'file',
    'keep_unannotated_train': False,
    'keep_unannotated_val': True,
    'labels_dir': '',
    'rasterize_on_the_fly': False,
}
MANIFEST = 'prepared.json'  # Written last in each prepared label folder.
_PREPARE_COMMAND = ('python -m data_pipelines.prepare --config=configs/lvis.py'
                    ' --config.data.root=DIR')


def _setting(data_config, key: str):
  # LVIS's own keys are not in configs/default.py: a data config made from
  # another file (--config=configs/coco.py --config.data.name=lvis) lacks
  # them. configs/lvis.py sets them, and a saved config.json is merged onto
  # DEFAULTS (oasis_jax/config/workdir.py).
  return data_config.get(key, DEFAULTS[key])


class LvisDataset(core.FolderDataset):
  """LVIS v1 under `data_config.root`; see `data_pipelines.lvis`.

  Attributes:
    paint_order: 'file' or 'small_on_top'.
    labels_dir: the folder of prepared label PNGs.
    rasterize_on_the_fly: paint label maps at every read.
  """

  def __init__(self, data_config):
    root = str(data_config.root)
    super().__init__(NAME, root, None,
                     core.ExampleDecoder(NUM_CLASSES))
    self.paint_order = str(_setting(data_config, 'paint_order'))
    if self.paint_order not in lvis_rasterize.PAINT_ORDERS:
      raise core.DataError(f'config.data.paint_order={self.paint_order!r}; '
                           f'expected one of {lvis_rasterize.PAINT_ORDERS}.')
    self._keep = {'train': bool(_setting(data_config,
                                         'keep_unannotated_train')),
                  'val': bool(_setting(data_config, 'keep_unannotated_val'))}
    labels_dir = str(_setting(data_config, 'labels_dir'))
    if not labels_dir and root:
      labels_dir = os.path.join(root, f'lvis_labels_{self.paint_order}')
    self.labels_dir = labels_dir
    self.rasterize_on_the_fly = bool(_setting(data_config,
                                              'rasterize_on_the_fly'))

  def keeps_unannotated(self, split: str) -> bool:
    """Whether images without annotations are examples of `split`."""
    self._check_split(split)
    return self._keep[split]

  def _check_split(self, split: str) -> None:
    if split not in ANNOTATION_FILES:
      raise core.DataError(f'Unknown split {split!r}; expected one of '
                           f'{sorted(ANNOTATION_FILES)}.')
    if not self.root:
      raise core.DataError(f'{self.name}: config.data.root is not set (the '
                           'folder of lvis_v1_*.json, train2017/, val2017/).')

  def annotation_file(self, split: str) -> str:
    self._check_split(split)
    return os.path.join(self.root, ANNOTATION_FILES[split])

  def annotations(self, split: str) -> lvis_annotations.Annotations:
    """The parsed annotation file of `split` (cached)."""
    return lvis_annotations.load_annotations(self.annotation_file(split),
                                             self.root)

  def label_folder(self, split: str) -> str:
    """Where `prepare` writes the label PNGs of `split`."""
    self._check_split(split)
    return os.path.join(self.labels_dir, f'{split}_label')

  def records(self, split: str,
              problems: Optional[list[core.Problem]] = None, *,
              from_index: bool = False) -> list[lvis_annotations.Record]:
    """The images of `split` that are examples, sorted by image id.

    Images without annotations are left out unless kept for the split; an
    image whose file is missing is a problem.

    Args:
      split: 'train' or 'val'.
      problems: if given, problems are appended here and the records that
        are fine are returned; otherwise the first problem raises.
      from_index: read light records (without annotations) from the
        prepared folder's index when there is one, rather than parsing the
        annotation file (1 GB for train): what listing the prepared pairs
        needs.

    Raises:
      DataError: one line naming the file (when `problems` is None).
    """
    found = []
    records = []
    try:
      if from_index and self.prepared(split):
        source = self.annotation_file(split)
        all_records = self._index(split)
      else:
        annotations = self.annotations(split)
        source, all_records = annotations.file, annotations.records
    except core.DataError as e:
      if problems is None:
        raise
      problems.append(core.Problem(e.file or self.annotation_file(split),
                                   str(e)))
      return []
    listed = {}
    keep = self.keeps_unannotated(split)
    for record in all_records:
      if not record.num_annotations and not keep:
        continue
      folder = os.path.dirname(record.image)
      if folder not in listed:
        listed[folder] = _list_files(folder)
      if os.path.basename(record.image) not in listed[folder]:
        found.append(core.Problem(record.image, (
            f'{record.image}: image file not found (LVIS image '
            f'{record.image_id} of {source}).')))
        continue
      records.append(record)
    if not records and not found:
      found.append(core.Problem(source, (
          f'{source}: no images to use in the {split} split.')))
    if problems is not None:
      problems.extend(found)
      return records
    if found:
      more = (f' (and {len(found) - 1} more problems; python -m '
              'data_pipelines.inspect lists them all)' if len(found) > 1
              else '')
      raise core.DataError(found[0].message + more, file=found[0].file)
    return records

  def list_pairs(self, split: str,
                 problems: Optional[list[core.Problem]] = None
                 ) -> list[core.Pair]:
    """(image, prepared label PNG) pairs of `split`'s examples."""
    folder = epath.Path(self.label_folder(split))
    return [core.Pair(r.key, r.image, os.fspath(folder / f'{r.key}.png'))
            for r in self.records(split, problems, from_index=True)]

  def _index(self, split: str) -> list[lvis_annotations.Record]:
    """Light records of every image, from the prepared folder's index."""
    manifest = os.fspath(epath.Path(self.label_folder(split)) / MANIFEST)
    try:
      return [lvis_annotations.Record(image_id, key,
                                      os.path.join(self.root, rel), h, w, (),
                                      n)
              for image_id, key, rel, h, w, n in self._read_manifest(
                  split)['images']]
    except (KeyError, TypeError, ValueError) as e:
      raise lvis_annotations.error(
          manifest, f'malformed index ({e}); delete the folder and '
          f'run {_PREPARE_COMMAND}.') from e

  def _read_manifest(self, split: str) -> dict[str, Any]:
    manifest = epath.Path(self.label_folder(split)) / MANIFEST
    try:
      return json.loads(manifest.read_text())
    except (OSError, ValueError) as e:
      raise lvis_annotations.error(
          os.fspath(manifest), f'unreadable ({e}); delete the '
          f'folder and run {_PREPARE_COMMAND}.') from e

  def prepared(self, split: str) -> bool:
    """Whether `split`'s labels are prepared (raises if for other data)."""
    manifest = epath.Path(self.label_folder(split)) / MANIFEST
    if not manifest.exists():
      return False
    info = self._read_manifest(split)
    expected = self._manifest(split)
    for key in ('paint_order', 'annotation_bytes'):
      if info.get(key) != expected[key]:
        raise lvis_annotations.error(os.fspath(manifest), (
            f'labels prepared with {key}={info.get(key)!r}, not '
            f'{expected[key]!r}; set config.data.labels_dir to another '
            f'folder or delete this one and run {_PREPARE_COMMAND}.'))
    return True

  def _manifest(self, split: str) -> dict[str, Any]:
    path = self.annotation_file(split)
    try:
      size = os.stat(path).st_size
    except OSError as e:
      raise lvis_annotations.error(path, 'LVIS annotation file not found '
                                   f'({e.strerror}).') from e
    return {'annotation_file': os.path.basename(path),
            'annotation_bytes': size,
            'paint_order': self.paint_order,
            'format': '16-bit grayscale PNG of LVIS category ids, 0 '
                      'unlabeled'}

  def check_prepared(self, split: str) -> None:
    """DataError (one line) unless `split`'s labels are prepared."""
    if not self.prepared(split):
      folder = self.label_folder(split)
      raise core.DataError(
          f'{folder}: LVIS label maps not prepared (no {MANIFEST}); run '
          f'{_PREPARE_COMMAND} or set config.data.rasterize_on_the_fly=True.',
          file=folder)

  def prepare(self, splits: Sequence[str] = ('train', 'val'),
              num_threads: int = 0, log_progress: bool = False) -> dict:
    """Rasterizes every image of `splits` to a label PNG, once.

    Every image of the annotation file gets a label (those without
    annotations too, so the keep switches need no new preparation); a split
    already prepared with the same settings is skipped.

    Returns:
      split -> number of label PNGs written (0: already prepared).
    """
    written = {}
    for split in splits:
      if self.prepared(split):
        written[split] = 0
        continue
      annotations = self.annotations(split)
      folder = epath.Path(self.label_folder(split))
      folder.mkdir(parents=True, exist_ok=True)

      def write(record, folder=folder, annotations=annotations):
        label = lvis_rasterize.rasterize(record, self.paint_order,
                                         annotations.file)
        target = folder / f'{record.key}.png'
        tmp = folder / f'.{record.key}.png.tmp'
        tmp.write_bytes(lvis_rasterize.encode_label_png(label))
        tmp.rename(target)

      threads = num_threads or os.cpu_count() or 1
      start = time.time()
      count = len(annotations.records)
      with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for done, _ in enumerate(pool.map(write, annotations.records), 1):
          if log_progress and (done % 1000 == 0 or done == count):
            print(f'{split}: {done}/{count} label maps '
                  f'({time.time() - start:.0f} s)', file=sys.stderr)
      index = [[r.image_id, r.key, os.path.relpath(r.image, self.root),
                r.height, r.width, r.num_annotations]
               for r in annotations.records]
      (folder / MANIFEST).write_text(json.dumps(
          {**self._manifest(split), 'num_labels': count, 'images': index}))
      written[split] = count
    return written

  def frequency_groups(self, split: str = 'val') -> dict[str, list[int]]:
    """'rare' / 'common' / 'frequent' -> sorted class ids of the group."""
    groups = {name: [] for name in lvis_annotations.FREQUENCY_GROUPS.values()}
    for cat_id, letter in sorted(self.annotations(split).frequency.items()):
      groups[lvis_annotations.FREQUENCY_GROUPS[letter]].append(cat_id)
    return groups


def _list_files(folder: str) -> set[str]:
  """Names of the files in `folder` (empty if it does not exist)."""
  try:
    with os.scandir(folder) as entries:
      return {e.name for e in entries}
  except OSError:
    return set()



def make_dataset(data_config) -> LvisDataset:
  """The LVIS tree under `data_config.root`.

  Raises:
    DataError: config.data.source='tfds' (LVIS trains from prepared PNGs),
      or an unknown paint order.
  """
  if data_config.source != 'folder':
    raise core.DataError(f"config.data.source={data_config.source!r}: LVIS "
                         "reads its prepared label PNGs; set "
                         "config.data.source='folder'.")
  return LvisDataset(data_config)
