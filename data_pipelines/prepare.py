"""Prepares a data set once: the prepared format, or LVIS's label PNGs.

  python -m data_pipelines.prepare --config=configs/ade20k.py \
      --config.data.root=DIR --out=DIR [--splits=train,val]
      [--num_processes=0] [--records_per_shard=1024] [--compression=none]
      [--host_index=0 --host_count=1]

With --out, any data set (ADE20K, COCO-Stuff, Cityscapes, LVIS, a folder
data set) is decoded, remapped, resized by the recipe of its config and
written as checksummed ArrayRecord shards (data_pipelines/prepared/), by one
process per core, with a progress bar; train with
`--config.data.prepared=DIR`. Interrupted (Ctrl-C, kill -9), it continues
where it stopped when run again. Hosts sharing one folder split the shards
with --host_index/--host_count; the last to finish writes prepared.json.

Without --out (LVIS only), writes the 16-bit label PNGs of
`<labels_dir>/{train,val}_label/` that the folder route reads, and a
`prepared.json` per split; a split already prepared is skipped.
"""

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

import data_pipelines
from data_pipelines.lvis import dataset as lvis_dataset
from data_pipelines.prepared import writer


def _prepare_lvis_labels(data_config) -> int:
  if data_config.name != lvis_dataset.NAME:
    raise data_pipelines.DataError(
        f'config.data.name={data_config.name!r}: pass --out=DIR to write the '
        'prepared format (only lvis has label PNGs to prepare without it).')
  dataset = data_pipelines.get_dataset(data_config)
  written = dataset.prepare(flags.FLAGS.splits, flags.FLAGS.num_threads,
                            log_progress=True)
  for split, count in written.items():
    state = f'{count} label maps written' if count else 'already prepared'
    print(f'{split}: {state} in {dataset.label_folder(split)}')
  return 0


def _prepare_folder(data_config) -> int:
  f = flags.FLAGS
  summary = writer.prepare(
      data_config, f.out, f.splits, f.num_processes, f.records_per_shard,
      f.compression, f.host_index, f.host_count, log_progress=True)
  pairs = sum(summary['pairs'].values())
  seconds = summary['seconds']
  by_split = ', '.join(f'{s} {n}' for s, n in summary['pairs'].items())
  state = ('complete' if summary['complete'] else
           'shards of other hosts still missing')
  print(f'{f.out}: {pairs} pairs ({by_split}), {summary["written"]} shards '
        f'written this run, {summary["bytes"] / 2**20:.1f} MiB '
        f'({summary["raw_bytes"] / 2**20:.1f} MiB raw) in {seconds:.1f} s '
        f'with {summary["processes"]} processes; {state}.')
  return 0


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  data_config = flags.FLAGS.config.data
  try:
    if flags.FLAGS.out:
      return _prepare_folder(data_config)
    return _prepare_lvis_labels(data_config)
  except (data_pipelines.DataError, OSError) as e:
    print(f'FATAL {e}'.replace('\n', ' '), file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print('FATAL interrupted; run the same command again to continue '
          '(finished shards are kept).', file=sys.stderr)
    return 130


if __name__ == '__main__':
  # Defined here only, so that importing this module defines no flag.
  config_flags.DEFINE_config_file(
      'config', None, 'Training config file (its config.data is used).',
      lock_config=True)
  flags.DEFINE_string('out', '', 'The prepared folder to write (any data '
                      'set); empty: LVIS label PNGs only.')
  flags.DEFINE_list('splits', ['train', 'val'], 'Splits to prepare.')
  flags.DEFINE_integer('num_threads', 0, 'Without --out: rasterizing '
                       'threads (0: the number of CPUs).')
  flags.DEFINE_integer('num_processes', 0,
                       'With --out: writing processes (0: one per core).')
  flags.DEFINE_integer('records_per_shard', 1024, 'Pairs per shard.')
  flags.DEFINE_enum('compression', 'none', sorted(writer.COMPRESSIONS),
                    'Shard compression: none (raw arrays, fastest to read) '
                    'or zstd (level 1: ~0.7 of the bytes).')
  flags.DEFINE_integer('host_index', 0, 'This host (shards i, i + n, ...).')
  flags.DEFINE_integer('host_count', 1, 'Hosts preparing one shared folder.')
  flags.mark_flags_as_required(['config'])
  app.run(main)
