"""Grain input pipelines: this process's share of training and eval batches.

Training: a global stream of example indices, shuffled with a new
permutation each epoch (deterministic by seed), repeated forever; the example
at stream position p gets its random crop and flip from (seed, p); process i
of n takes the i-th block of b = B / n consecutive positions of each global
batch of B. So the global batch of step s (the processes' batches s side by
side) is stream positions [s * B, (s + 1) * B), in this order, whatever the
process and worker counts (row order matters: the noise and the per-row
randomness of a step follow the row), and epoch e covers each example once.
Evaluation: one deterministic pass over the split, resized to the image size,
the last batch padded.

Batches are host numpy dicts of uint8 images and int32 class ids (the one-hot
happens in the step); the iterators support get_state()/set_state() and
`grain.checkpoint.CheckpointSave(it)` in an Orbax `Composite`.
"""

import functools
import math
import os
import threading
import time
from typing import Optional

from absl import flags
import grain
import jax

import data_pipelines
from data_pipelines import transforms
from oasis_jax.runtime import cpu_workers
from data_pipelines import geometry

_READ_THREADS = 2  # Batches prepared in parallel per process / worker.
_PREFETCH_BATCHES = 2  # Batches buffered ahead per process / worker.
_PARENT_POLL_S = 0.5  # How often a worker checks that its parent lives.

def num_examples(config, split: str) -> int:
  """Number of examples of `split` ('train' or 'val') of the data set."""
  return data_pipelines.num_examples(config.data, split)


def epoch_at_step(config, step: int) -> float:
  """Epochs of the training split consumed after `step` training steps."""
  return step * config.train.batch_size / num_examples(config, 'train')


def _process(process_index: Optional[int],
             process_count: Optional[int]) -> tuple[int, int]:
  index = jax.process_index() if process_index is None else int(process_index)
  count = jax.process_count() if process_count is None else int(process_count)
  if count < 1 or not 0 <= index < count:
    raise ValueError(f'process_index={index} is not in [0, process_count='
                     f'{count}).')
  return index, count


def _per_process(global_batch: int, process_count: int, what: str) -> int:
  if global_batch < process_count or global_batch % process_count:
    raise ValueError(f'{what}={global_batch} is not divisible by '
                     f'process_count={process_count}.')
  return global_batch // process_count


def _load_hw(config) -> Optional[tuple[int, int]]:
  """Train-time resize before the crop, or None for no crop."""
  data = config.data
  if data.name == 'synthetic' or not data.random_crop:
    return None
  return geometry.load_hw(data)


def _watch_parent(parent: int) -> None:
  while True:
    time.sleep(_PARENT_POLL_S)
    if os.getppid() != parent:  # Re-parented: the training process died.
      os._exit(1)  # pylint: disable=protected-access


def end_with_parent(parent: int, worker_index: int,
                    worker_count: int) -> None:
  """Grain worker initializer: the worker ends when process `parent` dies.

  However the training process dies (kill -9 included), its workers notice
  within _PARENT_POLL_S that they were re-parented and exit, instead of
  living on under init holding their memory. (A watchdog thread rather than
  prctl(PR_SET_PDEATHSIG): that signal follows the parent *thread*, and
  works on Linux only.)

  Args:
    parent: the pid of the training process (bound before the spawn, so a
      parent that died before the worker started is noticed too).
    worker_index: this worker (unused).
    worker_count: the number of workers (unused).
  """
  del worker_index, worker_count
  threading.Thread(target=_watch_parent, args=(parent,), daemon=True,
                   name='end_with_parent').start()


def _to_iterator(dataset: grain.MapDataset, num_workers: int):
  """MapDataset -> DatasetIterator, with `num_workers` worker processes."""
  iter_ds = dataset.to_iter_dataset(
      grain.ReadOptions(num_threads=_READ_THREADS,
                        prefetch_buffer_size=_PREFETCH_BATCHES))
  if num_workers > 0:
    if not flags.FLAGS.is_parsed():
      # Grain's workers read absl flags; outside absl.app, use the defaults.
      flags.FLAGS.mark_as_parsed()
    iter_ds = iter_ds.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=num_workers),
        worker_init_fn=functools.partial(end_with_parent, os.getpid()))
  return iter(iter_ds)


def create_train_dataset(config, *, seed: Optional[int] = None,
                         process_index: Optional[int] = None,
                         process_count: Optional[int] = None
                         ) -> grain.MapDataset:
  """The infinite training MapDataset of this process (see the module doc).

  Element k is this process's batch k: {'image': uint8 [b, H, W, 3],
  'label': int32 [b, H, W]}, b = config.train.batch_size // process_count.
  """
  index, count = _process(process_index, process_count)
  batch = _per_process(config.train.batch_size, count,
                       'config.train.batch_size')
  seed = (config.seed if seed is None else seed) % 2**32
  source = data_pipelines.make_source(config.data, 'train',
                                      allow_build=count == 1)
  augment = transforms.RandomCropAndFlip(
      geometry.image_hw(config.data), _load_hw(config),
      flip=bool(config.data.random_flip), seed=seed)
  dataset = grain.MapDataset.source(source).seed(seed).shuffle().repeat(None)
  # Local batches of b consecutive positions; process i takes batches i,
  # i + n, ...: rows [i * b, (i + 1) * b) of each global batch.
  dataset = dataset.map_with_index(augment).batch(batch, drop_remainder=True)
  return dataset[index::count]


def create_train_iterator(config, *, seed: Optional[int] = None,
                          process_index: Optional[int] = None,
                          process_count: Optional[int] = None):
  """Infinite iterator over this process's training batches.

  Args:
    config: the full config (`config.data`, `config.train.batch_size`,
      `config.seed`).
    seed: shuffling and augmentation seed; default `config.seed`.
    process_index: this process; default `jax.process_index()`.
    process_count: number of processes; default `jax.process_count()`.

  Returns:
    A Grain DatasetIterator (get_state()/set_state()) yielding {'image': uint8
    [b, H, W, 3], 'label': int32 [b, H, W]} with b = config.train.batch_size
    // process_count, epochs repeating with a new shuffle each, run by
    `config.data.num_workers` worker processes (0: this process; -1:
    cpu_workers.auto_num_workers).

  Raises:
    ValueError: the batch size is not divisible by the process count.
    data_pipelines.DataError: bad data (naming the file), here or during the
      iteration.
  """
  dataset = create_train_dataset(config, seed=seed,
                                 process_index=process_index,
                                 process_count=process_count)
  return _to_iterator(dataset, cpu_workers.resolve(config.data.num_workers))


# pylint: disable-next=redefined-outer-name
def create_eval_iterator(config, *, split: str = 'val',
                         batch_size: Optional[int] = None,
                         process_index: Optional[int] = None,
                         process_count: Optional[int] = None,
                         num_examples: int = -1):
  """One deterministic pass over this process's share of `split`.

  Process i of n takes examples i, i + n, ...; every process yields the same
  number of batches, the last ones padded.

  Args:
    config: the full config.
    split: 'val' or 'train'.
    batch_size: global batch size (default `config.eval.batch_size`), split
      evenly over the processes.
    process_index: default `jax.process_index()`.
    process_count: default `jax.process_count()`.
    num_examples: the first this many examples of the split; -1: all.

  Returns:
    A Grain DatasetIterator of {'image': uint8 [b, H, W, 3], 'label': int32
    [b, H, W], 'valid': bool [b] (False for padding), 'index': int32 [b]
    (the example's index in the split, -1 for padding)}.
  """
  index, count = _process(process_index, process_count)
  global_batch = config.eval.batch_size if batch_size is None else batch_size
  batch = _per_process(int(global_batch), count, 'eval batch_size')
  source = data_pipelines.make_source(config.data, split,
                                      allow_build=count == 1)
  total = len(source) if num_examples < 0 else min(num_examples, len(source))
  if total <= 0:
    raise data_pipelines.DataError(f'{config.data.name} {split}: no examples '
                                   f'to evaluate (num_examples={num_examples}'
                                   ').')
  per_process = math.ceil(total / count)
  padded = math.ceil(per_process / batch) * batch
  dataset = grain.MapDataset.range(padded).map(
      transforms.PaddedShardExample(source, geometry.image_hw(config.data),
                                    index, count, total))
  return _to_iterator(dataset.batch(batch),
                      cpu_workers.resolve(config.data.num_workers))


def close_iterator(data_iter) -> None:
  """Stops an iterator's worker processes, if it has any."""
  close = getattr(data_iter, 'close', None)
  if close is not None:
    close()
