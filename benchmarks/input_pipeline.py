"""Images/s of the training input pipeline with 0, 1 and 2 worker processes.

  python -m benchmarks.input_pipeline [--datasets=ade20k,cityscapes]
      [--workers=0,1,2] [--runs=5] [--batches=8] [--batch_size=8]

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
from data_pipelines import synthetic
from oasis_jax.training import input_pipeline

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

def _iterator(name: str, root: str, workers: int):
  config = fake_trees.make_config(name, root, num_workers=workers)
  config.train.batch_size = _BATCH_SIZE.value
  return input_pipeline.create_train_iterator(config, process_index=0,
                                              process_count=1)


def _time(name: str, root: str, workers: list[int]) -> list[dict]:
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
      it = _iterator(name, root, w)
      for _ in range(_WARMUP.value):
        shapes[w] = tuple(next(it)['image'].shape[1:3])
      warmup_s[w].append(time.perf_counter() - start)
      start = time.perf_counter()
      for _ in range(_BATCHES.value):
        next(it)
      rates[w].append(_BATCHES.value * _BATCH_SIZE.value /
                      (time.perf_counter() - start))
      it.close()
  return [{'dataset': name, 'hw': list(shapes[w]), 'workers': w,
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


def main(argv):
  del argv
  synthetic_ms = round(_synthetic_ms_per_sample(), 2)
  print(f'synthetic source: {synthetic_ms} ms CPU per 64x64 sample',
        flush=True)
  root = tempfile.mkdtemp(prefix='oasis_input_bench_')
  results = []
  try:
    for name in _DATASETS.value:
      tree = os.path.join(root, name)
      start = time.perf_counter()
      fake_trees.write(name, tree, _NUM_FILES.value)
      print(f'wrote {_NUM_FILES.value} {name} pairs in '
            f'{time.perf_counter() - start:.1f} s', flush=True)
      cpu_ms = round(fake_trees.cpu_ms_per_image(name, tree), 2)
      print(f'{name}: {cpu_ms} ms CPU per image (one thread)', flush=True)
      for result in _time(name, tree, [int(w) for w in _WORKERS.value]):
        result['cpu_ms_per_image'] = cpu_ms
        result['images_per_s_per_core'] = round(1000 / cpu_ms, 1)
        results.append(result)
        print(result, flush=True)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  print(f'\n{"data set":<12}{"output HxW":<12}{"workers":>8}'
        f'{"images/s":>10}{"min":>8}{"max":>8}{"CPU ms/img":>12}')
  for r in results:
    print(f'{r["dataset"]:<12}{"x".join(map(str, r["hw"])):<12}'
          f'{r["workers"]:>8}{r["images_per_s"]:>10}{r["min"]:>8}'
          f'{r["max"]:>8}{r["cpu_ms_per_image"]:>12}')
  print(json.dumps({'benchmark': 'input_pipeline', 'cpus': os.cpu_count(),
                    'machine': platform.processor() or platform.machine(),
                    'batch_size': _BATCH_SIZE.value, 'runs': _RUNS.value,
                    'batches_per_run': _BATCHES.value,
                    'synthetic_ms_per_sample': synthetic_ms,
                    'results': results}))


if __name__ == '__main__':
  app.run(main)
