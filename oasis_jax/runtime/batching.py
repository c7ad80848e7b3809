"""One padded batch runner: a long host array through a fixed-size jit.

A jitted function compiled for a batch of `batch_size` (split over a mesh)
runs on inputs of any length: the inputs are cut into batches, the last one
padded, each placed with the batch sharding; the output of a call is fetched
while the next call runs, and the padding is dropped.
"""

from typing import Callable, Optional, Sequence

import jax
from jax.experimental import multihost_utils
import numpy as np


def to_host(x: jax.Array) -> np.ndarray:
  """A (global) array as numpy on every process."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    x = multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(jax.device_get(x))


def rounded_batch_size(batch_size: int, num_devices: int) -> int:
  """`batch_size` rounded up to a multiple of the devices (>= one each)."""
  return max(num_devices, -(-int(batch_size) // num_devices) * num_devices)


def _put(x: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
  """A host array, the same on every process -> a global array."""
  x = np.ascontiguousarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda i: x[i])


def run_padded(fn: Callable[..., jax.Array], inputs: Sequence[np.ndarray],
               batch_size: int, sharding: jax.sharding.Sharding, *,
               pad_values: Optional[Sequence[int]] = None) -> np.ndarray:
  """fn over `inputs` in batches of `batch_size`; outputs concatenated.

  Args:
    fn: a function of len(inputs) arrays of leading size `batch_size` (the
      batch split by `sharding`) -> one array of leading size `batch_size`.
    inputs: host arrays with the same leading size N, the same on every
      process.
    batch_size: the compiled batch size (a multiple of the devices).
    sharding: where each batch is placed (e.g. sharding.batch_sharding).
    pad_values: the fill value of each input's padding (default 0).

  Returns:
    [N, ...] numpy, fn's rows of the real (unpadded) inputs.
  """
  inputs = [np.asarray(a) for a in inputs]
  pad_values = pad_values or [0] * len(inputs)
  n = len(inputs[0])
  outs, pending = [], None
  for start in range(0, n, batch_size):
    args = [a[start:start + batch_size] for a in inputs]
    count = len(args[0])
    if count < batch_size:  # Pad the last call to the compiled batch size.
      args = [np.concatenate([a, np.full((batch_size - count,) + a.shape[1:],
                                         v, a.dtype)])
              for a, v in zip(args, pad_values)]
    out = fn(*[_put(a, sharding) for a in args])
    if pending is not None:  # Fetch the previous call while this one runs.
      outs.append(to_host(pending[0])[:pending[1]])
    pending = (out, count)
  if pending is None:
    return np.zeros((0,), np.float32)
  outs.append(to_host(pending[0])[:pending[1]])
  return np.concatenate(outs)
