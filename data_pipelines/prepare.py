"""Prepares LVIS's label maps once: 16-bit label PNGs from the annotations.

  python -m data_pipelines.prepare --config=configs/lvis.py \
      --config.data.root=DIR [--splits=train,val] [--num_threads=0]

Writes `<labels_dir>/{train,val}_label/<image stem>.png` (labels_dir:
config.data.labels_dir, default `<root>/lvis_labels_<paint_order>`) and a
`prepared.json` per split; a split already prepared with the same settings
is skipped. Training then reads the PNGs like COCO-Stuff's.
"""

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

import data_pipelines
from data_pipelines import lvis


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  data_config = flags.FLAGS.config.data
  try:
    if data_config.name != lvis.NAME:
      raise data_pipelines.DataError(
          f'config.data.name={data_config.name!r}: only lvis needs '
          'preparing (the others read their folders as they are).')
    dataset = data_pipelines.get_dataset(data_config)
    written = dataset.prepare(flags.FLAGS.splits, flags.FLAGS.num_threads,
                              log_progress=True)
  except data_pipelines.DataError as e:
    print(f'FATAL: {e}', file=sys.stderr)
    return 1
  for split, count in written.items():
    state = f'{count} label maps written' if count else 'already prepared'
    print(f'{split}: {state} in {dataset.label_folder(split)}')
  return 0


if __name__ == '__main__':
  # Defined here only, so that importing this module defines no flag.
  config_flags.DEFINE_config_file(
      'config', None, 'Training config file (its config.data is used).',
      lock_config=True)
  flags.DEFINE_list('splits', ['train', 'val'], 'Splits to prepare.')
  flags.DEFINE_integer('num_threads', 0,
                       'Rasterizing threads (0: the number of CPUs).')
  flags.mark_flags_as_required(['config'])
  app.run(main)
