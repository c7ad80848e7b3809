"""Helpers shared by the model benchmarks: config flags, timing, memory."""

import json
import resource
import statistics
import time
from typing import Callable, Optional

import jax
import numpy as np

from oasis_jax import train_state


def peak_rss_mib() -> float:
  """Peak resident memory of this process so far, in MiB (Linux: KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_compiled(fn: Callable[[], object], warmup: int, runs: int):
  """Median and all wall times (s) of fn() after warm-up; blocks on results."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(runs):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times), times


def _flops(stage) -> Optional[float]:
  """XLA's FLOP estimate of a Lowered or Compiled program, or None."""
  try:
    cost = stage.cost_analysis()
    if isinstance(cost, (list, tuple)):
      cost = cost[0]
    return float(cost.get('flops', 0.0)) or None
  except Exception:  # pylint: disable=broad-except
    return None


def compile_with_cost(jitted, *args):
  """AOT-compiles; returns (compiled, compile seconds, flops or None)."""
  t0 = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  compile_s = time.perf_counter() - t0
  return compiled, compile_s, _flops(compiled)


def lowered_flops(jitted, *args) -> Optional[float]:
  """XLA's FLOP estimate of the lowered (uncompiled) program, or None."""
  return _flops(jitted.lower(*args))


def print_table(rows: list[tuple[str, str]]) -> None:
  width = max(len(k) for k, _ in rows)
  for k, v in rows:
    print(f'{k:<{width}}  {v}')


def print_json(result: dict) -> None:
  print(json.dumps(result, sort_keys=True))


def make_batch(config, seed=0):
  """A random uint8 image / label batch of config.train.batch_size."""
  h, w = train_state.image_hw(config)
  b = config.train.batch_size
  rng = np.random.default_rng(seed)
  return {'image': rng.integers(0, 256, (b, h, w, 3), dtype=np.uint8),
          'label': rng.integers(0, config.data.num_classes, (b, h, w),
                                dtype=np.int32)}
