"""How many input worker processes `data.num_workers = -1` (auto) starts.

The training preprocessing costs about 7 ms of CPU per ADE20K image at
256x256 and 81 ms per Cityscapes image at 256x512 (BENCHMARKS.md), so one
core feeds about 140 ADE20K images/s. The automatic count gives every usable
core but one (left to the main process: JAX's dispatch and the host-to-device
copies) a worker, up to MAX_AUTO_WORKERS; on 1-2 cores it starts none (the
main process's reader threads already use both cores, and workers only add
start-up time).
"""

import os
from typing import Optional

AUTO = -1
MAX_AUTO_WORKERS = 32


def usable_cpus() -> int:
  """CPUs this process may run on (its affinity mask, e.g. under SLURM)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # Not on Linux.
    return os.cpu_count() or 1


def auto_num_workers(cpus: int) -> int:
  """0 for <= 2 CPUs, else cpus - 1, at most MAX_AUTO_WORKERS."""
  if cpus <= 2:
    return 0
  return min(cpus - 1, MAX_AUTO_WORKERS)


def resolve(num_workers: int, cpus: Optional[int] = None) -> int:
  """The worker count for config.data.num_workers.

  Args:
    num_workers: >= 0 as is, or -1 (AUTO) for auto_num_workers(cpus).
    cpus: usable CPUs (default: usable_cpus()).

  Returns:
    The number of worker processes (0: the main process reads).

  Raises:
    ValueError: num_workers < -1.
  """
  num_workers = int(num_workers)
  if num_workers == AUTO:
    return auto_num_workers(usable_cpus() if cpus is None else cpus)
  if num_workers < 0:
    raise ValueError(f'config.data.num_workers={num_workers}: expected >= 0 '
                     'or -1 (one per CPU core but one).')
  return num_workers
