"""Writing a prepared folder: every split decoded, remapped, resized, once.

Each split's pairs, in the folder route's order, are cut into shards of
`records_per_shard` consecutive pairs; worker processes (one per core) each
write whole shards. A shard is written under a temporary name, renamed when
complete, then its sidecar `<shard>.json` (records, bytes, SHA-256) is
written: a shard counts as done only with its sidecar, so an interrupted run
(Ctrl-C, kill -9) never leaves a shard that is later read, and a rerun skips
the finished ones. `prepared.json` is written once every shard is done.
"""

import dataclasses
import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import Any, Optional

from array_record.python import array_record_module

import data_pipelines
from data_pipelines import errors
from data_pipelines import sources
from data_pipelines import transforms
from data_pipelines.lvis import dataset as lvis_dataset
from data_pipelines.lvis import sources as lvis_sources
from data_pipelines.prepared import manifest as manifest_lib
from data_pipelines.prepared import records

# ArrayRecord options: one record per chunk (random access), raw or zstd
# level 1 (BENCHMARKS.md: zstd stores ~0.7 of the bytes but costs 0.3 ms per
# ADE20K and 0.5 ms per Cityscapes image more to read: over the 1 ms budget).
COMPRESSIONS = {'zstd': 'group_size:1,zstd:1',
                'none': 'group_size:1,uncompressed'}
_CONTEXT = multiprocessing.get_context('spawn')
_PARENT_POLL_S = 0.5
_PROGRESS_S = 1.0  # Progress bar refresh period.


@dataclasses.dataclass(frozen=True)
class Task:
  """One shard to write: split, index, shard count, first pair, pairs."""
  split: str
  index: int
  num_shards: int
  first: int
  count: int

  @property
  def name(self) -> str:
    return f'shard-{self.index:05d}-of-{self.num_shards:05d}'


def split_items(dataset, split: str) -> list:
  """The pairs (LVIS: records) of a split, in the folder route's order."""
  if dataset.name == lvis_dataset.NAME:
    return dataset.records(split)
  return dataset.list_pairs(split)


def items_source(dataset, split: str, items: list):
  """The source decoding `items` as the folder route does (LVIS: painted
  here, no label PNGs needed)."""
  if dataset.name == lvis_dataset.NAME:
    return lvis_sources.RasterizingSource(items, dataset.decoder,
                                          dataset.paint_order,
                                          dataset.annotation_file(split))
  return sources.FolderSource(items, dataset.decoder)


# Set in each writing process by _init_worker.
_STATE: dict[str, Any] = {}


def _watch_parent(parent: int) -> None:
  while True:
    time.sleep(_PARENT_POLL_S)
    if os.getppid() != parent:  # The preparing process died (kill -9).
      os._exit(1)  # pylint: disable=protected-access


def _init_worker(state: dict[str, Any], parent: Optional[int]) -> None:
  _STATE.update(state)
  if parent is not None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # The parent handles it.
    threading.Thread(target=_watch_parent, args=(parent,),
                     daemon=True).start()


def shard_file(out: str, task: Task) -> str:
  """The path of a shard once complete."""
  return os.path.join(out, task.split, f'{task.name}.array_record')


def _sidecar(shard_path: str) -> str:
  return shard_path[:-len('.array_record')] + '.json'


def write_shard(job: tuple[Task, Any, list[str]]) -> dict[str, Any]:
  """Writes one shard (temporary name, then renamed) and its sidecar.

  Args:
    job: (the shard, the source of its pairs, their keys).
  """
  task, source, keys = job
  hw = _STATE['hw'][task.split]
  dtype = _STATE['dtype']
  path = shard_file(_STATE['out'], task)
  tmp = f'{path}.tmp-{os.getpid()}'
  writer = array_record_module.ArrayRecordWriter(tmp, _STATE['options'])
  raw_bytes = 0
  try:
    for i in range(task.count):
      example = source[i]
      image = transforms.resize_image(example['image'], hw)
      label = transforms.resize_label(example['label'], hw)
      data = records.encode(keys[i], image, label, dtype)
      raw_bytes += len(data)
      writer.write(data)
      with _STATE['counter'].get_lock():
        _STATE['counter'].value += 1
  finally:
    writer.close()
  with open(tmp, 'rb+') as f:
    os.fsync(f.fileno())
  info = {'file': os.path.basename(path), 'first': task.first,
          'records': task.count, 'bytes': os.path.getsize(tmp),
          'raw_bytes': raw_bytes, 'sha256': manifest_lib.file_sha256(tmp)}
  os.replace(tmp, path)
  manifest_lib.write_json(_sidecar(path), info)
  return info


def finished(out: str, task: Task) -> Optional[dict[str, Any]]:
  """The sidecar of a shard complete on disk, or None."""
  path = shard_file(out, task)
  try:
    info = manifest_lib.read_json(_sidecar(path), 'shard sidecar')
    if (info['first'], info['records']) != (task.first, task.count):
      return None
    if os.path.getsize(path) != info['bytes']:
      return None
  except (errors.DataError, OSError, KeyError):
    return None
  return info


def plan_tasks(counts: dict[str, int], per_shard: int) -> list[Task]:
  """The shards of every split: consecutive runs of `per_shard` pairs."""
  tasks = []
  for split, count in counts.items():
    num_shards = max(1, -(-count // per_shard))
    for k in range(num_shards):
      first = k * per_shard
      tasks.append(Task(split, k, num_shards, first,
                        min(per_shard, count - first)))
  return tasks


class Progress:
  """A one-line progress bar with rate and ETA on stderr.

  On a terminal it redraws in place; otherwise it prints a line about every
  tenth of the work.
  """

  def __init__(self, total: int, stream=None):
    self.total = total
    self.stream = stream or sys.stderr
    self.start = time.time()
    self._tty = self.stream.isatty()
    self._last_tenth = -1
    self._last_done = -1

  def line(self, done: int) -> str:
    elapsed = time.time() - self.start
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (self.total - done) / rate if rate > 0 else float('nan')
    eta_text = time.strftime('%H:%M:%S', time.gmtime(eta)) if rate else '?'
    filled = int(30 * done / max(1, self.total))
    return (f'[{"#" * filled}{"." * (30 - filled)}] {done}/{self.total} '
            f'pairs  {rate:.1f}/s  ETA {eta_text}')

  def update(self, done: int, final: bool = False) -> None:
    tenth = 10 * done // max(1, self.total)
    if done == self._last_done and not (final and self._tty):
      return
    self._last_done = done
    if self._tty:
      self.stream.write('\r' + self.line(done) + ('\n' if final else ''))
    elif tenth != self._last_tenth or final:
      self.stream.write(self.line(done) + '\n')
    self._last_tenth = tenth
    self.stream.flush()


def _run(jobs: list, state: dict[str, Any], processes: int,
         progress: Optional[Progress]) -> None:
  """Writes the shards of `jobs`, in `processes` processes (1: here).

  Spawned processes (a fork of a process running JAX can hang); each job
  carries only its own pairs.
  """
  counter = state['counter']
  if processes <= 1:
    _init_worker(state, None)
    for job in jobs:
      write_shard(job)
      if progress:
        progress.update(counter.value)
    return
  pool = _CONTEXT.Pool(processes, _init_worker, (state, os.getpid()))
  try:
    result = pool.map_async(write_shard, jobs, chunksize=1)
    while not result.ready():
      result.wait(_PROGRESS_S)
      if progress:
        progress.update(counter.value)
    result.get()  # Raises the first worker error.
    pool.close()
  finally:
    pool.terminate()
    pool.join()


def _remove_stale(out: str, splits) -> None:
  """Deletes temporary files left by interrupted runs."""
  for split in splits:
    folder = os.path.join(out, split)
    for name in os.listdir(folder):
      if '.tmp-' in name:
        os.remove(os.path.join(folder, name))


def _plan(data_config, dataset, splits, per_shard: int,
          compression: str) -> tuple[dict[str, Any], dict[str, list]]:
  """(plan, split -> pairs or LVIS records) of a preparation."""
  items, plan_splits = {}, {}
  for split in splits:
    items[split] = split_items(dataset, split)
    plan_splits[split] = {
        'num_records': len(items[split]),
        'fingerprint': manifest_lib.fingerprint(
            dataset.root, manifest_lib.source_files(dataset, split))}
  plan = {'format_version': manifest_lib.FORMAT_VERSION,
          'recipe': manifest_lib.recipe(data_config, dataset),
          'compression': compression, 'records_per_shard': per_shard,
          'splits': plan_splits}
  return plan, items


def _check_plan(out: str, plan: dict[str, Any]) -> None:
  """Writes `out/plan.json`, or checks the one a previous run wrote."""
  path = os.path.join(out, manifest_lib.PLAN)
  if os.path.exists(path):
    manifest_lib.check(manifest_lib.read_json(path, 'preparation plan'),
                       plan, out, 'this run',
                       'Use another --out, or delete this folder.')
  else:
    manifest_lib.write_json(path, plan)


def prepare(data_config, out: str, splits=('train', 'val'),
            num_processes: int = 0, records_per_shard: int = 1024,
            compression: str = 'none', host_index: int = 0,
            host_count: int = 1, log_progress: bool = False
            ) -> dict[str, Any]:
  """Prepares `splits` of the data set of `data_config` into `out`.

  Args:
    data_config: `config.data` (name, root, sizes, class count, ...).
    out: the prepared folder (created; a rerun continues it).
    splits: the splits to prepare.
    num_processes: writing processes (0: one per CPU core).
    records_per_shard: pairs per shard.
    compression: 'zstd' or 'none' (COMPRESSIONS).
    host_index: this host's index; it writes shards host_index, host_index
      + host_count, ... (all, by default).
    host_count: hosts sharing the work (on one shared folder).
    log_progress: show a progress bar on stderr.

  Returns:
    {'pairs' (by split), 'written' (shards this run), 'bytes' (all shards),
    'raw_bytes', 'seconds', 'processes', 'complete' (prepared.json
    written)}.

  Raises:
    DataError: one line naming the file or key, for bad data or a folder
      being prepared with another recipe.
  """
  if compression not in COMPRESSIONS:
    raise errors.DataError(f'compression={compression!r}; expected one of '
                           f'{sorted(COMPRESSIONS)}.')
  start = time.time()
  dataset = data_pipelines.get_dataset(data_config)
  if dataset.num_classes > 65536:
    raise errors.DataError(f'num_classes={dataset.num_classes}: the prepared '
                           'format stores class ids in 16 bits.')
  plan, items = _plan(data_config, dataset, splits, int(records_per_shard),
                      compression)
  for split in splits:
    os.makedirs(os.path.join(out, split), exist_ok=True)
  _check_plan(out, plan)
  if host_count == 1:
    _remove_stale(out, splits)
  counts = {s: plan['splits'][s]['num_records'] for s in splits}
  tasks = plan_tasks(counts, int(records_per_shard))
  todo = [t for i, t in enumerate(tasks) if i % host_count == host_index
          and finished(out, t) is None]
  processes = min(num_processes or os.cpu_count() or 1, max(1, len(todo)))
  jobs = []
  for t in todo:
    shard = items[t.split][t.first:t.first + t.count]
    jobs.append((t, items_source(dataset, t.split, shard),
                 [item.key for item in shard]))
  state = {'out': out,
           'options': COMPRESSIONS[compression],
           'dtype': records.label_dtype(dataset.num_classes),
           'hw': {s: manifest_lib.split_hw(data_config, s) for s in splits},
           'counter': _CONTEXT.Value('q', 0)}
  progress = Progress(sum(t.count for t in todo)) if log_progress else None
  _run(jobs, state, processes, progress)
  if progress:
    progress.update(state['counter'].value, final=True)
  infos = {t: finished(out, t) for t in tasks}
  complete = all(infos.values())
  if complete:
    _write_manifest(out, plan, tasks, infos)
  done = [i for i in infos.values() if i]
  return {'pairs': counts, 'written': len(todo),
          'bytes': sum(i['bytes'] for i in done),
          'raw_bytes': sum(i['raw_bytes'] for i in done),
          'seconds': time.time() - start, 'processes': processes,
          'complete': complete}


def _write_manifest(out: str, plan: dict[str, Any], tasks: list[Task],
                    infos: dict[Task, dict[str, Any]]) -> None:
  manifest = {k: v for k, v in plan.items() if k != 'records_per_shard'}
  manifest['splits'] = {}
  for split, info in plan['splits'].items():
    shards = [{k: infos[t][k] for k in ('file', 'records', 'bytes', 'sha256')}
              for t in tasks if t.split == split]
    manifest['splits'][split] = {
        **info, 'bytes': sum(s['bytes'] for s in shards), 'shards': shards}
  manifest_lib.write_json(os.path.join(out, manifest_lib.MANIFEST), manifest)
