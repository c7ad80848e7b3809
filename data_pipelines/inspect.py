"""Scans data set splits: their pairs, sizes, classes and problems.

  python -m data_pipelines.inspect --config=configs/coco.py \
      --config.data.root=DIR [--split=train] [--json]

Scans every split a training run reads (train and val) unless --split names
one. Reports, per split, the number of pairs, the image sizes, the histogram
of class ids after the data set's remapping and every problem found (each
naming the file); exits with status 1 if there is any problem. With --json
it prints one JSON object with `num_examples`, `image_sizes`, `class_histogram` (class id ->
pixel count) and `problems` (a list of {'file', 'problem'}); for every split
(no --split), one object of such objects by split name. LVIS is scanned
from its annotation files (label maps painted on the fly) and adds
`frequency_groups` (pixels and share of the unlabeled, rare, common and
frequent classes), `num_categories_present`, `num_unannotated_images` and
`unannotated_kept`. With --config.data.prepared=DIR it reports on the
prepared folder instead: every shard's SHA-256 and every record's checksum
are checked, and `prepared` adds the manifest's recipe, compression, shard
count and bytes.
"""

import collections
import concurrent.futures
import json
import os
import sys
import time
from typing import Any, Optional

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

import data_pipelines
from data_pipelines import core
from data_pipelines.lvis import dataset as lvis_dataset
from data_pipelines.lvis import inspect as lvis_inspect
from data_pipelines.prepared import manifest as prepared_manifest
from data_pipelines.prepared import reader as prepared_reader
from oasis_jax.runtime import fatal


def _define_flags():
  """Defines the flags; only when run as a program, so that importing `scan`
  defines no global flag (such as --config, which main.py also defines)."""
  config_flags.DEFINE_config_file(
      'config', None, 'Training config file (its config.data is used).',
      lock_config=True)
  flags.DEFINE_enum('split', None, list(data_pipelines.SPLITS),
                    'Split to scan (default: every split a run reads).')
  flags.DEFINE_bool('json', False, 'Print one JSON object.')
  flags.DEFINE_integer('num_threads', 0,
                       'Decoding threads (0: the number of CPUs).')
  flags.mark_flags_as_required(['config'])


def _scan_pair(decoder: core.ExampleDecoder, pair: core.Pair):
  """(image (w, h), class-id histogram, problems) of a pair (None: failed)."""
  problems = []
  image = label = None
  try:
    image = decoder.decode_image(core.read_bytes(pair.image), pair.image)
  except core.DataError as e:
    problems.append(core.Problem(e.file or pair.image, str(e)))
  try:
    label = decoder.decode_label(core.read_bytes(pair.label), pair.label)
  except core.DataError as e:
    problems.append(core.Problem(e.file or pair.label, str(e)))
  if image is not None and label is not None:
    if image.shape[:2] != label.shape:
      problems.append(core.Problem(pair.image, (
          f'{pair.image} is {image.shape[1]}x{image.shape[0]} (WxH) but its '
          f'label {pair.label} is {label.shape[1]}x{label.shape[0]}.')))
  histogram = None
  if label is not None:
    histogram = np.bincount(label.ravel())
    try:
      decoder.check_ids(label, pair.label)
    except core.DataError as e:
      problems.append(core.Problem(pair.label, str(e)))
  size = None if image is None else (image.shape[1], image.shape[0])
  return size, histogram, problems


def _scan_prepared(data_config, split: str, add) -> tuple[int, list, dict]:
  """(records, problems, extras) of a split of a prepared folder."""
  folder = data_config.prepared
  try:
    manifest = prepared_manifest.read_manifest(folder)
    problems = [core.Problem(folder, p) for p in
                prepared_reader.verify(folder, split, manifest)]
    source = data_pipelines.prepared_source(data_config, split)
  except core.DataError as e:
    return 0, [core.Problem(e.file or folder, str(e))], {}
  for i in range(len(source)) if not problems else ():
    try:
      label = source[i]['label']
    except core.DataError as e:
      problems.append(core.Problem(e.file or folder, str(e)))
      break
    add((label.shape[1], label.shape[0]), np.bincount(label.ravel()))
  info = manifest['splits'][split]
  extras = {'prepared': {
      'folder': folder, 'format_version': manifest['format_version'],
      'compression': manifest['compression'], 'recipe': manifest['recipe'],
      'shards': len(info['shards']), 'bytes': info['bytes']}}
  return len(source), problems, extras


def scan(data_config, split: str = 'train', num_threads: int = 0,
         log_progress: bool = False) -> dict[str, Any]:
  """Scans `split` of the data set of `data_config`.

  Args:
    data_config: `config.data`.
    split: 'train' or 'val'.
    num_threads: decoding threads (0: the number of CPUs).
    log_progress: print progress to stderr.

  Returns:
    {'dataset', 'root', 'split', 'num_examples' (pairs found),
    'image_sizes' ('WxH' -> count), 'class_histogram' (class id -> pixels,
    after remapping), 'problems' (list of {'file', 'problem'})}.
  """
  problems: list[core.Problem] = []
  extras = {}
  sizes = collections.Counter()
  histogram = np.zeros(0, np.int64)

  def add(size, hist):
    nonlocal histogram
    if size is not None:
      sizes[f'{size[0]}x{size[1]}'] += 1
    if hist is not None:
      if len(hist) > len(histogram):
        histogram = np.pad(histogram, (0, len(hist) - len(histogram)))
      histogram[:len(hist)] += hist

  if data_config.prepared:
    count, problems, extras = _scan_prepared(data_config, split, add)
  elif data_config.name == 'synthetic':
    source = data_pipelines.make_source(data_config, split)
    count = len(source)
    for i in range(count):
      example = source[i]
      h, w = example['label'].shape
      add((w, h), np.bincount(example['label'].ravel()))
  else:
    pairs, dataset, scan_one = [], None, None
    try:
      dataset = data_pipelines.get_dataset(data_config)
      # LVIS: the annotations are scanned, not the PNGs.
      if data_config.name == lvis_dataset.NAME:
        pairs = dataset.records(split, problems)
        scan_one = lambda r: lvis_inspect.scan_record(dataset, split, r)
      else:
        pairs = dataset.list_pairs(split, problems)
        scan_one = lambda p: _scan_pair(dataset.decoder, p)
    except core.DataError as e:
      problems.append(core.Problem(e.file or str(data_config.root), str(e)))
    count = len(pairs)
    threads = num_threads or os.cpu_count() or 1
    start = time.time()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
      results = pool.map(scan_one, pairs)
      for done, (size, hist, found) in enumerate(results, 1):
        add(size, hist)
        problems.extend(found)
        if log_progress and (done % 1000 == 0 or done == count):
          print(f'{done}/{count} pairs scanned ({time.time() - start:.0f} s)',
                file=sys.stderr)
    if isinstance(dataset, lvis_dataset.LvisDataset):
      extras = lvis_inspect.report_extras(
          dataset, split, {c: int(n) for c, n in enumerate(histogram) if n})
  return {
      'dataset': data_config.name,
      'root': data_config.root,
      'split': split,
      'num_examples': count,
      'image_sizes': dict(sizes.most_common()),
      'class_histogram': {int(c): int(n) for c, n in enumerate(histogram)
                          if n},
      'problems': [{'file': p.file, 'problem': p.message} for p in problems],
      **extras,
  }


def format_report(report: dict[str, Any],
                  num_classes: Optional[int] = None) -> str:
  """The human-readable form of `scan`'s report."""
  lines = [f"{report['dataset']} {report['split']} ({report['root']}): "
           f"{report['num_examples']} pairs"]
  sizes = list(report['image_sizes'].items())
  shown = ', '.join(f'{s}: {n}' for s, n in sizes[:10])
  more = f', and {len(sizes) - 10} other sizes' if len(sizes) > 10 else ''
  lines.append(f'image sizes (WxH): {shown}{more}')
  if 'prepared' in report:
    info = report['prepared']
    lines.append(f"prepared folder {info['folder']}: {info['shards']} "
                 f"shard(s), {info['bytes']} bytes ({info['compression']}), "
                 f"format {info['format_version']}, recipe "
                 + json.dumps(info['recipe'], sort_keys=True))
  histogram = report['class_histogram']
  total = sum(histogram.values()) or 1
  lines.append(f'class ids after remapping: {len(histogram)} present'
               + (f' of {num_classes}' if num_classes else '') +
               ' (id: pixels, share)')
  for class_id, pixels in sorted(histogram.items()):
    lines.append(f'  {class_id:5d}: {pixels:12d}  {100 * pixels / total:6.2f}%')
  if 'frequency_groups' in report:
    lines.append(f"categories present: {report['num_categories_present']}; "
                 f"images without annotations: "
                 f"{report['num_unannotated_images']} ("
                 f"{'kept' if report['unannotated_kept'] else 'skipped'})")
    for name, group in report['frequency_groups'].items():
      line = f"  {name:9s}: {100 * group['share']:6.2f}% of pixels"
      if name != 'unlabeled':
        line += (f", {group['categories_present']} of {group['categories']}"
                 ' categories present')
      lines.append(line)
  problems = report['problems']
  lines.append(f'{len(problems)} problem(s)' + (':' if problems else '.'))
  lines.extend(f"  {p['problem']}" for p in problems)
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = flags.FLAGS.config
  as_json = flags.FLAGS.json
  splits = ([flags.FLAGS.split] if flags.FLAGS.split else
            list(data_pipelines.SPLITS))
  reports = {split: scan(config.data, split, flags.FLAGS.num_threads,
                         log_progress=not as_json) for split in splits}
  if as_json:
    print(json.dumps(reports[splits[0]] if len(splits) == 1 else reports))
  else:
    print('\n\n'.join(format_report(r, int(config.data.num_classes))
                       for r in reports.values()))
  return 1 if any(r['problems'] for r in reports.values()) else 0


if __name__ == '__main__':
  _define_flags()
  fatal.run_main(main)
