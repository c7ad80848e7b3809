"""The device mesh and the shardings of the train state and the batches."""

from typing import Any, Optional

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

DATA_AXIS = 'data'


def make_mesh(num_devices: Optional[int] = None) -> jax.sharding.Mesh:
  """A 1-D mesh over the first `num_devices` devices, axis 'data'.

  The axis is of type Auto (XLA propagates shardings), not the Explicit type
  that `jax.make_mesh` now defaults to: the model and loss code index arrays
  with batch-sharded integer maps (class balancing, LabelMix), which Explicit
  axes reject without per-op out_sharding annotations.

  Args:
    num_devices: how many devices to use (default: all of them, over all
      processes). Fewer than all is for tests on one process; a multi-process
      run must use every device.

  Returns:
    The mesh.
  """
  devices = jax.devices()
  n = len(devices) if num_devices is None else num_devices
  if not 1 <= n <= len(devices):
    raise ValueError(f'num_devices={num_devices}: there are {len(devices)} '
                     'devices.')
  if jax.process_count() > 1 and n != len(devices):
    raise ValueError('A multi-process run uses every device; got '
                     f'num_devices={n} of {len(devices)}.')
  return jax.make_mesh((n,), (DATA_AXIS,), devices=devices[:n],
                       axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Every device holds the whole array (parameters, scalars, keys)."""
  return NamedSharding(mesh, P())


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """The leading (batch) axis split over the 'data' axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def state_sharding(mesh: jax.sharding.Mesh, abstract_state: Any) -> Any:
  """The train state's shardings: a tree like `abstract_state`, replicated."""
  return jax.tree.map(lambda _: replicated(mesh), abstract_state)


def check_batch_size(batch_size: int, mesh: jax.sharding.Mesh,
                     what: str = 'config.train.batch_size') -> None:
  """Raises unless the global batch divides over the devices and processes."""
  n = mesh.devices.size
  if batch_size % n:
    raise ValueError(
        f'{what}={batch_size} (the global batch) does not divide by the '
        f'{n} devices of the mesh; use a multiple of {n}.')
  if batch_size % jax.process_count():
    raise ValueError(f'{what}={batch_size} does not divide by the '
                     f'{jax.process_count()} processes.')


def global_batch(local_batch: dict[str, np.ndarray],
                 mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """This process's share of a batch -> global arrays split over 'data'.

  Args:
    local_batch: numpy arrays whose leading axis is this process's part of
      the global batch (global batch / process count rows).
    mesh: the device mesh.

  Returns:
    The same keys as global jax.Arrays of the global batch size.
  """
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


def put_replicated(tree: Any, mesh: jax.sharding.Mesh) -> Any:
  """Host values, the same on every process -> replicated global arrays."""
  sharding = replicated(mesh)

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda i: x[i])

  return jax.tree.map(put, tree)


def replicated_key(mesh: jax.sharding.Mesh, seed: int,
                   *folds: int) -> jax.Array:
  """PRNGKey(seed) with `folds` folded in, as a replicated global array."""
  key = jax.random.PRNGKey(seed)
  for f in folds:
    key = jax.random.fold_in(key, f)
  return put_replicated(np.asarray(key), mesh)
