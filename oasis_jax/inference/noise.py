"""The noise of evaluation and inference: vector i from (seed, stream, i).

Evaluation (FID, diversity) and inference (`Synthesizer`) draw their 3D
noise with one scheme, so that an image depends on its seed, its stream and
its index only, not on the batch size, the device count or the other images:

  key_i = fold_in(fold_in(PRNGKey(seed), stream), i)
  z_i   = normal(key_i, [z_dim])

(Training draws fresh noise from the step's key instead: steps.draw_noise.)
The host helpers below build per-pixel noise for local edits and paths
between two noises.
"""

import functools
from typing import Collection, Union

import jax
import jax.numpy as jnp
import numpy as np

EDIT_STREAM = 0x3D17ED  # XOR-ed into the stream of local edits' new noise.

Region = Union[np.ndarray, int, Collection[int]]


def noise_for_ids(seed, stream, ids: jax.Array, z_dim: int) -> jax.Array:
  """z of the given example ids (traceable; use inside jit).

  Args:
    seed: int or uint32 scalar.
    stream: int or uint32 scalar, folded into the seed.
    ids: [B] non-negative integer example ids.
    z_dim: the noise size.

  Returns:
    [B, z_dim] float32, row b from (seed, stream, ids[b]).
  """
  key = jax.random.fold_in(jax.random.PRNGKey(seed), stream)
  return jax.vmap(lambda i: jax.random.normal(
      jax.random.fold_in(key, i), (z_dim,)))(ids.astype(jnp.uint32))


@functools.partial(jax.jit, static_argnums=(3, 4))
def _noise(seed, stream, offset, num, z_dim):
  return noise_for_ids(seed, stream, offset + jnp.arange(num), z_dim)


def noise(seed: int, num: int, z_dim: int, *, stream: int = 0,
          offset: int = 0) -> np.ndarray:
  """Deterministic z ~ N(0, I) on the host: vector i from (seed, stream,
  offset + i).

  Returns:
    [num, z_dim] float32.
  """
  return np.asarray(_noise(np.uint32(seed % 2**32), np.uint32(stream % 2**32),
                           np.int32(offset), int(num), int(z_dim)))


def region_mask(label: np.ndarray, region: Region) -> np.ndarray:
  """A boolean mask of the pixels to edit.

  Args:
    label: [H, W] or [B, H, W] class ids.
    region: a boolean mask of the label's shape (or [H, W], shared by the
      batch), or a class id / a collection of class ids (their pixels).

  Returns:
    bool, the shape of `label`.
  """
  label = np.asarray(label)
  if hasattr(region, 'dtype'):  # numpy / jax arrays
    region = np.asarray(region)
    if region.dtype == bool:
      mask = np.broadcast_to(region, label.shape) if (
          region.shape == label.shape[-2:]) else region
      if mask.shape != label.shape:
        raise ValueError(f'region mask of shape {region.shape} does not '
                         f'match the label map {label.shape}.')
      return np.asarray(mask)
    ids = region.ravel().tolist()
  elif isinstance(region, (int, np.integer)):
    ids = [region]
  else:
    ids = list(region)
  if not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool)
             for i in ids):
    raise ValueError(f'region must be a boolean mask or class ids; got '
                     f'{region!r}.')
  return np.isin(label, np.asarray(ids, np.int64))


def edit_noise(z: np.ndarray, mask: np.ndarray,
               new_z: np.ndarray) -> np.ndarray:
  """Per-pixel noise: `new_z` inside `mask`, `z` elsewhere.

  Args:
    z: [B, z_dim] or [B, H, W, z_dim], the current noise.
    mask: [B, H, W] bool, the region.
    new_z: [B, z_dim] or [B, H, W, z_dim], the noise of the region.

  Returns:
    [B, H, W, z_dim] float32.
  """
  b, h, w = mask.shape
  z, new_z = (np.broadcast_to(x[:, None, None, :], (b, h, w, x.shape[-1]))
              if x.ndim == 2 else x for x in (np.asarray(z), np.asarray(new_z)))
  return np.where(mask[..., None], new_z, z).astype(np.float32)


def interpolate_noise(z0: np.ndarray, z1: np.ndarray, num_steps: int,
                      method: str = 'slerp') -> np.ndarray:
  """Noises from z0 to z1 (both included), along the last axis.

  Args:
    z0, z1: equally shaped, [..., z_dim].
    num_steps: how many noises (>= 2).
    method: 'slerp' (spherical, keeps the norm typical of a Gaussian) or
      'linear'.

  Returns:
    [num_steps, ..., z_dim] float32.
  """
  z0, z1 = np.asarray(z0, np.float64), np.asarray(z1, np.float64)
  if z0.shape != z1.shape:
    raise ValueError(f'z0 {z0.shape} and z1 {z1.shape} differ in shape.')
  if num_steps < 2:
    raise ValueError(f'num_steps={num_steps}; at least 2 (both ends).')
  t = np.linspace(0.0, 1.0, num_steps).reshape((-1,) + (1,) * z0.ndim)
  if method == 'linear':
    return ((1 - t) * z0 + t * z1).astype(np.float32)
  if method != 'slerp':
    raise ValueError(f"method must be 'slerp' or 'linear', got {method!r}.")
  n0 = np.linalg.norm(z0, axis=-1, keepdims=True)
  n1 = np.linalg.norm(z1, axis=-1, keepdims=True)
  cos = np.sum(z0 * z1, axis=-1, keepdims=True) / np.maximum(n0 * n1, 1e-12)
  omega = np.arccos(np.clip(cos, -1.0, 1.0))
  so = np.sin(omega)
  parallel = so < 1e-6  # Same direction: slerp degenerates to linear.
  so = np.where(parallel, 1.0, so)
  a = np.where(parallel, 1 - t, np.sin((1 - t) * omega) / so)
  b = np.where(parallel, t, np.sin(t * omega) / so)
  return (a * z0 + b * z1).astype(np.float32)
