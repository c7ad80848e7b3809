"""Helpers shared by the model benchmarks: timing, memory, FLOPs, peaks."""

import copy
import json
import resource
import statistics
import time
from typing import Any, Callable, Optional

import jax
import numpy as np

from data_pipelines import geometry

# Dense peak FLOP/s per chip (one JAX device) by compute dtype, from the
# vendors' data sheets, keyed by a substring of `device.device_kind`; the
# first match wins (specific names first). float32 on NVIDIA GPUs is the TF32
# tensor-core peak (XLA's default precision for float32 convs and matmuls on
# Ampere and later); on TPUs float32 convs and matmuls run as bfloat16
# passes at the default precision, so the bfloat16 peak applies.
PEAK_FLOP_PER_S = (
    ('H100 PCIe', {'bfloat16': 756e12, 'float32': 378e12}),
    ('H100', {'bfloat16': 989e12, 'float32': 495e12}),
    ('H200', {'bfloat16': 989e12, 'float32': 495e12}),
    ('A100', {'bfloat16': 312e12, 'float32': 156e12}),
    ('TPU v4', {'bfloat16': 275e12, 'float32': 275e12}),
    ('TPU v5 lite', {'bfloat16': 197e12, 'float32': 197e12}),
    ('TPU v5e', {'bfloat16': 197e12, 'float32': 197e12}),
    ('TPU v5p', {'bfloat16': 459e12, 'float32': 459e12}),
    ('TPU v5', {'bfloat16': 459e12, 'float32': 459e12}),
    ('TPU v6 lite', {'bfloat16': 918e12, 'float32': 918e12}),
)


def peak_rss_mib() -> float:
  """Peak resident memory of this process so far, in MiB (Linux: KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory() -> dict[str, Any]:
  """This process's peak memory so far: the accelerator's, else host RSS.

  Returns:
    {'peak_memory_mib': the largest `peak_bytes_in_use` of the local devices
    (their own allocator statistics) in MiB, or the peak RSS where devices
    keep none (CPU); 'memory_source': 'device' or 'rss';
    'device_memory_limit_mib': the devices' `bytes_limit` or None;
    'peak_rss_mib': the host's peak RSS}.
  """
  stats = [d.memory_stats() for d in jax.local_devices()]
  peaks = [s['peak_bytes_in_use'] for s in stats
           if s and 'peak_bytes_in_use' in s]
  limits = [s['bytes_limit'] for s in stats if s and 'bytes_limit' in s]
  rss = peak_rss_mib()
  return {
      'peak_memory_mib': max(peaks) / 2**20 if peaks else rss,
      'memory_source': 'device' if peaks else 'rss',
      'device_memory_limit_mib': min(limits) / 2**20 if limits else None,
      'peak_rss_mib': rss,
  }


def peak_flop_per_s(device_kind: str, dtype: str) -> Optional[float]:
  """A chip's dense peak FLOP/s for `dtype` from PEAK_FLOP_PER_S, or None."""
  for name, peaks in PEAK_FLOP_PER_S:
    if name in device_kind:
      return peaks.get(dtype)
  return None


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
  """AOT-compiles; returns (compiled, compile seconds, flops or None).

  The compiled program's FLOPs are platform-dependent: XLA:GPU's count leaves
  out the convolutions it hands to cuDNN. Use direct_conv_flops for rates.
  """
  t0 = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  compile_s = time.perf_counter() - t0
  return compiled, compile_s, _flops(compiled)


def lowered_flops(jitted, *args) -> Optional[float]:
  """XLA's FLOP estimate of the lowered (uncompiled) program, or None."""
  return _flops(jitted.lower(*args))


def direct_conv_flops(make_jitted: Callable[[Any], Any], config,
                      *args) -> Optional[float]:
  """FLOPs of `config`'s program with direct convolutions, on any platform.

  XLA's cost analysis of the program before optimization (`Lowered`), where
  every convolution is still an HLO convolution (not yet a cuDNN call), with
  `perf.conv_impl='xla'`: the CPU formulations run bands and Winograd tiles
  in loops, whose bodies the analysis counts once. The same count on every
  platform: the reference formulation's convolutions (those the official
  model and a GPU run do; the 64x64 training row: 78.8 GFLOP, against 64.8
  of the CPU formulations, whose upsampling convolutions run in phases).

  Args:
    make_jitted: config -> the jitted function.
    config: the configuration (not modified).
    *args: the function's arguments (arrays or jax.ShapeDtypeStruct).

  Returns:
    The FLOPs of one call, or None where the analysis is unavailable.
  """
  direct = copy.deepcopy(config)
  direct.perf.conv_impl = 'xla'
  return lowered_flops(make_jitted(direct), *args)


def print_table(rows: list[tuple[str, str]]) -> None:
  width = max(len(k) for k, _ in rows)
  for k, v in rows:
    print(f'{k:<{width}}  {v}')


def print_json(result: dict) -> None:
  print(json.dumps(result, sort_keys=True))


def make_batch(config, seed=0):
  """A random uint8 image / label batch of config.train.batch_size."""
  h, w = geometry.image_hw(config.data)
  b = config.train.batch_size
  rng = np.random.default_rng(seed)
  return {'image': rng.integers(0, 256, (b, h, w, 3), dtype=np.uint8),
          'label': rng.integers(0, config.data.num_classes, (b, h, w),
                                dtype=np.int32)}
