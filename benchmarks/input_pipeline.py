"""Images/s of the training input pipeline with 0, 1 and 2 worker processes.

  python -m benchmarks.input_pipeline [--datasets=ade20k,cityscapes]
      [--workers=0,1,2] [--runs=5] [--batches=8] [--batch_size=8]
      [--routes=folder,prepared]

Writes a fake ADE20K tree (683x512 JPEGs, as most ADE20K images) and a fake
Cityscapes tree (2048x1024 PNGs) of smooth procedural scenes in a temporary
folder, then times the official training preprocessing through
`input_pipeline.create_train_iterator`: decode, resize to 286x286 (bicubic /
nearest), random 256 crop and flip for ADE20K; resize to 256x512 and flip for
Cityscapes. `runs` rounds; in each, every worker count gets a fresh
iterator, warm-up batches (worker start-up included) and then `batches`
timed batches; the median over rounds is reported, with the CPU time per
image of the same work on one thread (robust on a shared machine) and the
images/s per CPU core it implies (1000 / CPU ms). Prints a table and, last,
one JSON line.
"""

import json
import os
import platform
import shutil
import statistics
import tempfile
import time

from absl import app
from absl import flags
from benchmarks import fake_trees
import data_pipelines
from data_pipelines import synthetic
from data_pipelines import geometry
from data_pipelines import transforms
from data_pipelines.prepared import manifest as prepared_manifest
from data_pipelines.prepared import writer
from oasis_jax.training import input_pipeline
import numpy as np

_DATASETS = flags.DEFINE_list('datasets', ['ade20k', 'cityscapes'],
                              'Data sets to time (ade20k, cityscapes).')
_WORKERS = flags.DEFINE_list('workers', ['0', '1', '2'],
                             'Worker process counts to time.')
_RUNS = flags.DEFINE_integer('runs', 5, 'Timed runs per setting.')
_BATCHES = flags.DEFINE_integer('batches', 8, 'Batches per timed run.')
_WARMUP = flags.DEFINE_integer('warmup', 2,
                               'Untimed batches first, in every run.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 8, 'Batch size.')
_NUM_FILES = flags.DEFINE_integer(
    'num_files', 24, 'Pairs in each fake tree (read over and over).')
_ROUTES = flags.DEFINE_list('routes', ['folder', 'prepared'],
                            'Routes to time (folder, prepared).')

# (train, val) pairs of the full splits, and the (H, W) each is stored at
# (train: the resize before the crop; val: the image size).
FULL_SPLITS = {
    'ade20k': ((20210, 2000), (286, 286), (256, 256), 1),
    'coco_stuff': ((118287, 5000), (286, 286), (256, 256), 1),
    'cityscapes': ((2975, 500), (256, 512), (256, 512), 1),
    'lvis': ((100170, 19809), (286, 286), (256, 256), 2),
}
# Images/s one H200 trains in bfloat16 today, and the goal (BENCHMARKS.md).
H200_RATES = (108, 158)


def _iterator(name: str, root: str, workers: int, prepared: str = ''):
  config = fake_trees.make_config(name, root, num_workers=workers,
                                  prepared=prepared)
  config.train.batch_size = _BATCH_SIZE.value
  return input_pipeline.create_train_iterator(config, process_index=0,
                                              process_count=1)


def _time(name: str, root: str, workers: list[int],
          prepared: str = '') -> list[dict]:
  """Times the worker counts in interleaved rounds (the machine may be shared).

  Every run uses a fresh iterator: warm-up batches first (worker start-up
  included), then `batches` timed batches consumed back to back, so that no
  batch prefetched during a pause is counted.
  """
  rates = {w: [] for w in workers}
  warmup_s = {w: [] for w in workers}
  shapes = {}
  for _ in range(_RUNS.value):
    for w in workers:
      start = time.perf_counter()
      it = _iterator(name, root, w, prepared)
      for _ in range(_WARMUP.value):
        shapes[w] = tuple(next(it)['image'].shape[1:3])
      warmup_s[w].append(time.perf_counter() - start)
      start = time.perf_counter()
      for _ in range(_BATCHES.value):
        next(it)
      rates[w].append(_BATCHES.value * _BATCH_SIZE.value /
                      (time.perf_counter() - start))
      it.close()
  return [{'dataset': name, 'route': 'prepared' if prepared else 'folder',
           'hw': list(shapes[w]), 'workers': w,
           'images_per_s': round(statistics.median(rates[w]), 1),
           'min': round(min(rates[w]), 1), 'max': round(max(rates[w]), 1),
           'warmup_s': round(statistics.median(warmup_s[w]), 2)}
          for w in workers]


def _synthetic_ms_per_sample(hw=(64, 64), num_classes=6,
                             count=50) -> float:
  """CPU time per sample of the built-in synthetic source (default data)."""
  source = synthetic.SyntheticSource(count, hw, num_classes)
  source[0]
  start = time.process_time()
  for i in range(count):
    source[i]
  return 1000 * (time.process_time() - start) / count


def cpu_ms_per_image(config, batches: int = 6) -> float:
  """CPU ms per image of read + crop + flip + stacking, one thread, no Grain.

  The same for both routes: the folder route's read also decodes and
  resizes; the prepared route's reads a resized record.
  """
  source = data_pipelines.make_source(config.data, 'train')
  load_hw = (prepared_manifest.split_hw(config.data, 'train')
             if config.data.random_crop else None)
  augment = transforms.RandomCropAndFlip(geometry.image_hw(config.data),
                                         load_hw, flip=True)
  b = _BATCH_SIZE.value
  augment(0, source[0])
  start = time.process_time()
  for k in range(batches):
    rows = [augment(i, source[i % len(source)])
            for i in range(k * b, (k + 1) * b)]
    {key: np.stack([r[key] for r in rows]) for key in rows[0]}
  return 1000 * (time.process_time() - start) / (batches * b)


def _prepare(name: str, tree: str, out: str, compression: str) -> dict:
  """Prepares the train split in this process; CPU s and bytes per pair."""
  config = fake_trees.make_config(name, tree)
  start = time.process_time()
  summary = writer.prepare(config.data, out, splits=('train',),
                           num_processes=1, records_per_shard=8,
                           compression=compression)
  cpu_s = time.process_time() - start
  pairs = summary['pairs']['train']
  return {'cpu_ms_per_pair': 1000 * cpu_s / pairs,
          'bytes_per_pair': summary['bytes'] / pairs,
          'raw_bytes_per_pair': summary['raw_bytes'] / pairs}


def full_sizes(zstd_ratio: dict[str, float]) -> list[dict]:
  """GB of the full splits, raw and zstd (at the fake trees' ratio)."""
  rows = []
  for name, (counts, train_hw, val_hw, id_bytes) in FULL_SPLITS.items():
    raw = sum(n * h * w * (3 + id_bytes)
              for n, (h, w) in zip(counts, (train_hw, val_hw)))
    ratio = zstd_ratio.get(name, zstd_ratio.get('ade20k', 1.0))
    rows.append({'dataset': name, 'pairs': list(counts),
                 'raw_gb': round(raw / 1e9, 2),
                 'zstd_gb': round(raw * ratio / 1e9, 2),
                 'zstd_ratio': round(ratio, 3)})
  return rows


def _measure_dataset(name: str, root: str, workers: list[int]) -> tuple:
  """(timing rows, preparation figures) of one data set, both routes."""
  tree = os.path.join(root, name)
  start = time.perf_counter()
  fake_trees.write(name, tree, _NUM_FILES.value)
  print(f'wrote {_NUM_FILES.value} {name} pairs in '
        f'{time.perf_counter() - start:.1f} s', flush=True)
  results, prep = [], {}
  routes = {'folder': ''}
  if 'prepared' in _ROUTES.value:
    for compression in ('none', 'zstd'):
      out = os.path.join(root, f'{name}_{compression}')
      prep[compression] = _prepare(name, tree, out, compression)
    routes['prepared'] = os.path.join(root, f'{name}_none')
    routes['prepared_zstd'] = os.path.join(root, f'{name}_zstd')
    print(f'{name} prepared: {prep}', flush=True)
  for route, prepared in routes.items():
    if route not in _ROUTES.value and route != 'prepared_zstd':
      continue
    config = fake_trees.make_config(name, tree, prepared=prepared)
    cpu_ms = round(cpu_ms_per_image(config), 3)
    print(f'{name} {route}: {cpu_ms} ms CPU per image (one thread)',
          flush=True)
    if route == 'prepared_zstd':
      prep['zstd']['read_cpu_ms_per_image'] = cpu_ms
      continue
    for result in _time(name, tree, workers, prepared):
      result['cpu_ms_per_image'] = cpu_ms
      result['images_per_s_per_core'] = round(1000 / cpu_ms, 1)
      results.append(result)
      print(result, flush=True)
  return results, prep


def _print_tables(results: list[dict], prep: dict, sizes: list[dict]):
  print(f'\n{"data set":<12}{"route":<10}{"output HxW":<12}{"workers":>8}'
        f'{"images/s":>10}{"min":>8}{"max":>8}{"CPU ms/img":>12}')
  for r in results:
    print(f'{r["dataset"]:<12}{r["route"]:<10}'
          f'{"x".join(map(str, r["hw"])):<12}'
          f'{r["workers"]:>8}{r["images_per_s"]:>10}{r["min"]:>8}'
          f'{r["max"]:>8}{r["cpu_ms_per_image"]:>12}')
  for name, figures in prep.items():
    for compression, f in figures.items():
      read = (f', read + crop + flip {f["read_cpu_ms_per_image"]} ms'
              if 'read_cpu_ms_per_image' in f else '')
      print(f'{name} prepare ({compression}): '
            f'{1000 / f["cpu_ms_per_pair"]:.1f} pairs/s per core, '
            f'{f["bytes_per_pair"] / 1e3:.1f} kB per pair '
            f'({f["raw_bytes_per_pair"] / 1e3:.1f} kB raw){read}')
  for row in sizes:
    print(f'{row["dataset"]} full ({row["pairs"][0]} + {row["pairs"][1]}): '
          f'{row["raw_gb"]} GB raw, {row["zstd_gb"]} GB zstd')
  by_route = {}
  for r in results:
    by_route.setdefault((r['dataset'], r['route']), r['cpu_ms_per_image'])
  for (name, route), ms in by_route.items():
    cores = ', '.join(f'{rate * ms / 1000:.2f} at {rate} img/s'
                      for rate in H200_RATES)
    print(f'{name} {route}: cores per H200: {cores}')


def main(argv):
  del argv
  synthetic_ms = round(_synthetic_ms_per_sample(), 2)
  print(f'synthetic source: {synthetic_ms} ms CPU per 64x64 sample',
        flush=True)
  root = tempfile.mkdtemp(prefix='oasis_input_bench_')
  results, prep = [], {}
  try:
    for name in _DATASETS.value:
      rows, prep[name] = _measure_dataset(
          name, root, [int(w) for w in _WORKERS.value])
      results.extend(rows)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  ratios = {name: f['zstd']['bytes_per_pair'] / f['zstd']['raw_bytes_per_pair']
            for name, f in prep.items() if 'zstd' in f}
  sizes = full_sizes(ratios) if ratios else []
  _print_tables(results, {n: f for n, f in prep.items() if f}, sizes)
  print(json.dumps({'benchmark': 'input_pipeline', 'cpus': os.cpu_count(),
                    'machine': platform.processor() or platform.machine(),
                    'batch_size': _BATCH_SIZE.value, 'runs': _RUNS.value,
                    'batches_per_run': _BATCHES.value,
                    'synthetic_ms_per_sample': synthetic_ms,
                    'results': results, 'prepare': prep,
                    'full_sizes': sizes}))


if __name__ == '__main__':
  app.run(main)
