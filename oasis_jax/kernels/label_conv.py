"""The conv of [z | one_hot(label)] as k*k row gathers by class id.

A faster formulation of layers.dense_label_conv: a conv over a one-hot map
reads, for each tap, the kernel row of the pixel's class, so it is a sum of
k*k gathers instead of a num_classes-channel convolution; a per-image z
adds z . W_tap to every row of that image's tables. Custom VJPs give the
kernel gradient as scatter-adds ('gather') or one-hot matmuls
('gather_matmul', MXU-friendly).
"""

import dataclasses
import functools
import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from oasis_jax.kernels import winograd

# Outputs of at least this many elements gather in a scan (see
# _one_hot_conv): below it the unrolled form wins and its memory does not
# matter.
_BIG_ARRAY = 2**22


def _conv2d(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return jax.lax.conv_general_dilated(
      x, kernel, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _shifted_labels(label: jax.Array, num_classes: int, k: int):
  """The k*k shifted views of the label map; outside pixels get id C."""
  p = k // 2
  h, w = label.shape[1:]
  lp = jnp.pad(label, ((0, 0), (p, p), (p, p)), constant_values=num_classes)
  return [lp[:, i:i + h, j:j + w] for i in range(k) for j in range(k)]


def _tap_rows(label: jax.Array, tables_shape, offsets: bool) -> jax.Array:
  """[k*k, B, h, w] rows of each tap's table read at each pixel.

  Outside pixels read the last (zero) row; with offsets, image b's rows
  are those of its own table in the [k*k, n_tables * rows, F] stack.
  """
  n_tables, kk, rows, _ = tables_shape
  ids = jnp.stack(_shifted_labels(label, rows - 1, math.isqrt(kk)))
  if offsets and n_tables > 1:
    ids = ids + (jnp.arange(n_tables, dtype=ids.dtype) * rows)[
        None, :, None, None]
  return ids


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _one_hot_conv(tables: jax.Array, label: jax.Array, init: jax.Array,
                  matmul_grad: bool, sequential: bool):
  """init + conv(one_hot(label), kernel), as a sum of k*k row gathers.

  tables: [1 or B, k*k, C + 1, F], the kernel's rows by tap and class (one
  table, or one per image with its z part added), the last row zero (read
  by pixels outside the map). init: [F] or the [B, h, w, F] output shape,
  of the tables' dtype.

  sequential: add one gather at a time in a scan over the taps (for outputs
  of at least _BIG_ARRAY elements; smaller ones always unroll). Unrolled
  (faster by itself), XLA hoists the k*k gathers of every SPADE of a
  training step (they depend on the label alone) and keeps them live: 27
  maps of the output's size at the generator's last block.
  """
  del matmul_grad
  n_tables, kk, rows, f = tables.shape
  flat = jnp.swapaxes(tables, 0, 1).reshape(kk, n_tables * rows, f)
  ids = _tap_rows(label, tables.shape, offsets=True)
  if not sequential or label.size * f < _BIG_ARRAY:
    return init + sum(flat[t][ids[t]] for t in range(kk))

  def tap(acc, tap_table_ids):
    tap_table, tap_ids = tap_table_ids
    return acc + tap_table[tap_ids], None

  out, _ = jax.lax.scan(tap, jnp.broadcast_to(init, label.shape + (f,)),
                        (flat, ids))
  return out


def _one_hot_conv_fwd(tables, label, init, matmul_grad, sequential):
  return (_one_hot_conv(tables, label, init, matmul_grad, sequential),
          (tables.shape, label, init.shape))


def _one_hot_conv_bwd(matmul_grad, sequential, res, g):
  del sequential
  # d table[tap, c] = sum of g over the pixels q whose tap reads class c,
  # i.e. with label[q + offset(tap)] == c: one reduction of the unshifted g
  # per tap, by the shifted label map (per image with per-image tables). A
  # scan over the taps keeps one [rows, F] partial live instead of the k*k
  # shifted copies of g.
  tables_shape, label, init_shape = res
  n_tables, kk, rows, f = tables_shape
  dtype = g.dtype  # That of tables and init.
  g_init = g if g.shape == init_shape else g.sum(axis=(0, 1, 2))
  b = label.shape[0]
  g = g.astype(jnp.promote_types(dtype, jnp.float32)).reshape(
      b, -1, f)
  ids = _tap_rows(label, tables_shape, offsets=not matmul_grad)

  def tap(_, tap_ids):
    if matmul_grad:  # Dense one-hot matmuls: MXU-friendly (TPU).
      one_hot = jax.nn.one_hot(tap_ids.reshape(b, -1), rows, dtype=g.dtype)
      part = jnp.einsum('bpr,bpf->brf', one_hot, g, precision='highest')
      return None, part.sum(0, keepdims=True) if n_tables == 1 else part
    part = jax.ops.segment_sum(g.reshape(-1, f), tap_ids.reshape(-1),
                               num_segments=n_tables * rows)
    return None, part.reshape(n_tables, rows, f)

  _, d_tables = jax.lax.scan(tap, None, ids)  # [k*k, n_tables, rows, F]
  return jnp.swapaxes(d_tables, 0, 1).astype(dtype), None, g_init


_one_hot_conv.defvjp(_one_hot_conv_fwd, _one_hot_conv_bwd)


@dataclasses.dataclass(frozen=True)
class GatherLabelConv:
  """A LabelConv formulation (see layers.dense_label_conv), by gathers.

  Attributes:
    matmul_grad: the backward pass as one-hot matmuls (TPU) instead of
      scatter-adds.
  """
  matmul_grad: bool = False

  def tables(self, kernel: jax.Array, bias: jax.Array,
             z: Optional[jax.Array], h: int, w: int, dtype: Any,
             broadcast_small: bool = False):
    """(tables [1 or B, k*k, C + 1, F], init) of _one_hot_conv.

    The last row of each table is zero (read by pixels outside the map).
    init is the bias, plus the conv of a per-pixel z. With broadcast_small,
    a per-image z on a map smaller than a table is made per pixel (cheaper
    than a table per image).
    """
    k, _, c_in, f = kernel.shape
    z_dim = 0 if z is None else z.shape[-1]
    c = c_in - z_dim
    acc = jnp.promote_types(dtype, jnp.float32)
    tables = kernel[:, :, z_dim:].reshape(1, k * k, c, f)
    init = bias
    if z_dim:
      kz = kernel[:, :, :z_dim].reshape(k * k, z_dim, f)
      if broadcast_small and z.ndim == 2 and h * w < k * k * (c + 1):
        z = jnp.broadcast_to(z[:, None, None, :], (z.shape[0], h, w, z_dim))
      if z.ndim == 2:
        tables = tables + jnp.einsum('bz,tzf->btf', z.astype(acc), kz,
                                     precision='highest')[:, :, None]
      else:
        init = bias + _conv2d(z.astype(dtype),
                              kz.reshape(k, k, z_dim, f).astype(dtype))
    tables = jnp.concatenate(
        [tables, jnp.zeros(tables.shape[:2] + (1, f), tables.dtype)], axis=2)
    return tables, init

  def __call__(self, kernel: jax.Array, bias: jax.Array, label: jax.Array,
               z: Optional[jax.Array], *, train: bool,
               dtype: Any) -> jax.Array:
    """dense_label_conv's numbers; gathers run in a scan in training."""
    _, h, w = label.shape
    tables, init = self.tables(kernel, bias, z, h, w, dtype,
                               broadcast_small=True)
    return _one_hot_conv(tables.astype(dtype), label, init.astype(dtype),
                         self.matmul_grad, train)


def label_conv_rows(tables: jax.Array, bias: jax.Array, label: jax.Array,
                    activation: Callable[[jax.Array], jax.Array]
                    ) -> winograd.BandSource:
  """activation(LabelConv(label)) as a BandSource: gathered per band.

  tables, bias: from GatherLabelConv.tables (z None or per image). Fed
  this way to SPADE's gamma / beta Winograd conv, the [B, H, W, hidden] map
  never reaches memory.
  """
  n_tables, kk, n_ids, f = tables.shape
  k = math.isqrt(kk)
  p = k // 2
  b, h, w = label.shape
  flat = jnp.swapaxes(tables, 0, 1).reshape(kk, n_tables * n_ids, f)

  def reader(padded_h, padded_w):
    # Ids of the padded map's rows and columns widened by p on each side;
    # outside pixels read the zero row.
    ids = jnp.pad(label, ((0, 0), (1 + p, padded_h + p - 1 - h),
                          (1 + p, padded_w + p - 1 - w)),
                  constant_values=n_ids - 1)

    def read(image, row, n_rows):
      band = jax.lax.dynamic_slice(ids, (image, row, 0),
                                   (1, n_rows + 2 * p, padded_w + 2 * p))[0]
      if n_tables > 1:
        band = band + image * n_ids
      out = activation(bias + sum(
          flat[i * k + j][band[i:i + n_rows, j:j + padded_w]]
          for i in range(k) for j in range(k)))
      rows = row - 1 + jnp.arange(n_rows)
      cols = jnp.arange(padded_w) - 1
      inside = (((rows >= 0) & (rows < h))[:, None]
                & ((cols >= 0) & (cols < w))[None, :])
      return jnp.where(inside[..., None], out, 0)

    return read

  return winograd.BandSource((b, h, w, f), reader)
