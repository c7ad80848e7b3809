"""FID Inception-v3 (pytorch-fid's variant) in Flax, and its inputs.

The network is the Inception-v3 that pytorch-fid uses to compute FID: the
TensorFlow Inception graph of 2015-12-05 as ported to PyTorch, laid out like
torchvision's `Inception3` with FID-specific A, C and E blocks. Only the layers
up to the global average pool ("pool3", 2048 features) are built.

Weights are never downloaded: `load_inception_params` reads the file given by
path (pretrained/inception_weights.py: the file, its check, the converter).

Image layout is NHWC throughout. `make_feature_fn` returns the function the
evaluation uses: images of any size (uint8 in [0, 255], or float in [-1, 1] as
the generator outputs them) in, float64 pool3 features out, computed with the
batch sharded over the 'data' axis of a device mesh.
"""

import functools
from typing import Any, Callable, Mapping, Optional, Tuple

import flax.linen as nn
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from oasis_jax.pretrained import inception_weights

INPUT_SIZE = 299  # The network's input height and width.
FEATURE_DIM = 2048  # pool3 features.
BN_EPSILON = 1e-3  # TF's value; not PyTorch's or Flax's default.


# ----------------------------------------------------------------------------
# The network.
# ----------------------------------------------------------------------------

_HIGHEST = jax.lax.Precision.HIGHEST


class BasicConv2d(nn.Module):
  """Conv (no bias) -> BatchNorm with running statistics (eps 1e-3) -> ReLU."""
  features: int
  kernel_size: Tuple[int, int]
  strides: Tuple[int, int] = (1, 1)
  padding: Tuple[int, int] = (0, 0)  # Symmetric zero padding (h, w).
  precision: Any = _HIGHEST

  @nn.compact
  def __call__(self, x):
    ph, pw = self.padding
    x = nn.Conv(self.features, self.kernel_size, strides=self.strides,
                padding=((ph, ph), (pw, pw)), use_bias=False,
                precision=self.precision, name='conv')(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON,
                     name='bn')(x)
    return nn.relu(x)


def _avg_pool_3x3_same(x):
  """3x3 stride-1 average over the in-image pixels only (TF 'SAME')."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=False)


def _max_pool_3x3_same(x):
  """3x3 stride-1 max pool, padding never wins."""
  return nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))


def _max_pool_3x3_s2(x):
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding='VALID')


class _InceptionA(nn.Module):
  """FIDInceptionA (Mixed_5b..5d): pool branch averages excluding padding."""
  pool_features: int
  precision: Any = _HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv2d, precision=self.precision)
    b1 = conv(64, (1, 1), name='branch1x1')(x)
    b5 = conv(48, (1, 1), name='branch5x5_1')(x)
    b5 = conv(64, (5, 5), padding=(2, 2), name='branch5x5_2')(b5)
    b3 = conv(64, (1, 1), name='branch3x3dbl_1')(x)
    b3 = conv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(b3)
    b3 = conv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_3')(b3)
    bp = conv(self.pool_features, (1, 1), name='branch_pool')(
        _avg_pool_3x3_same(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class _InceptionB(nn.Module):
  """torchvision's InceptionB (Mixed_6a): 35x35 -> 17x17."""
  precision: Any = _HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv2d, precision=self.precision)
    b3 = conv(384, (3, 3), strides=(2, 2), name='branch3x3')(x)
    bd = conv(64, (1, 1), name='branch3x3dbl_1')(x)
    bd = conv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
    bd = conv(96, (3, 3), strides=(2, 2), name='branch3x3dbl_3')(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class _InceptionC(nn.Module):
  """FIDInceptionC (Mixed_6b..6e): factorised 7x7 branches."""
  channels_7x7: int
  precision: Any = _HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv2d, precision=self.precision)
    c7 = self.channels_7x7
    b1 = conv(192, (1, 1), name='branch1x1')(x)
    b7 = conv(c7, (1, 1), name='branch7x7_1')(x)
    b7 = conv(c7, (1, 7), padding=(0, 3), name='branch7x7_2')(b7)
    b7 = conv(192, (7, 1), padding=(3, 0), name='branch7x7_3')(b7)
    bd = conv(c7, (1, 1), name='branch7x7dbl_1')(x)
    bd = conv(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_2')(bd)
    bd = conv(c7, (1, 7), padding=(0, 3), name='branch7x7dbl_3')(bd)
    bd = conv(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_4')(bd)
    bd = conv(192, (1, 7), padding=(0, 3), name='branch7x7dbl_5')(bd)
    bp = conv(192, (1, 1), name='branch_pool')(_avg_pool_3x3_same(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class _InceptionD(nn.Module):
  """torchvision's InceptionD (Mixed_7a): 17x17 -> 8x8."""
  precision: Any = _HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv2d, precision=self.precision)
    b3 = conv(192, (1, 1), name='branch3x3_1')(x)
    b3 = conv(320, (3, 3), strides=(2, 2), name='branch3x3_2')(b3)
    b7 = conv(192, (1, 1), name='branch7x7x3_1')(x)
    b7 = conv(192, (1, 7), padding=(0, 3), name='branch7x7x3_2')(b7)
    b7 = conv(192, (7, 1), padding=(3, 0), name='branch7x7x3_3')(b7)
    b7 = conv(192, (3, 3), strides=(2, 2), name='branch7x7x3_4')(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class _InceptionE(nn.Module):
  """FIDInceptionE_1 (Mixed_7b, avg pool) / FIDInceptionE_2 (7c, max pool)."""
  use_max_pool: bool
  precision: Any = _HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv2d, precision=self.precision)
    b1 = conv(320, (1, 1), name='branch1x1')(x)
    b3 = conv(384, (1, 1), name='branch3x3_1')(x)
    b3 = jnp.concatenate([
        conv(384, (1, 3), padding=(0, 1), name='branch3x3_2a')(b3),
        conv(384, (3, 1), padding=(1, 0), name='branch3x3_2b')(b3),
    ], axis=-1)
    bd = conv(448, (1, 1), name='branch3x3dbl_1')(x)
    bd = conv(384, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
    bd = jnp.concatenate([
        conv(384, (1, 3), padding=(0, 1), name='branch3x3dbl_3a')(bd),
        conv(384, (3, 1), padding=(1, 0), name='branch3x3dbl_3b')(bd),
    ], axis=-1)
    pool = _max_pool_3x3_same if self.use_max_pool else _avg_pool_3x3_same
    bp = conv(192, (1, 1), name='branch_pool')(pool(x))
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
  """pytorch-fid's Inception-v3 up to the global average pool.

  Submodule names are the PyTorch state dict's prefixes (`Conv2d_1a_3x3`,
  `Mixed_5b.branch1x1`, ...), each holding `conv` and `bn`.
  """
  precision: Any = _HIGHEST

  @nn.compact
  def __call__(self, x):
    """Pool3 features.

    Args:
      x: [B, 299, 299, 3] float32, already preprocessed (`preprocess`): RGB
        resized to 299x299 and scaled to [-1, 1]. Other sizes >= 75 run too.

    Returns:
      [B, 2048] float32 pool3 features.
    """
    conv = functools.partial(BasicConv2d, precision=self.precision)
    p = dict(precision=self.precision)
    x = conv(32, (3, 3), strides=(2, 2), name='Conv2d_1a_3x3')(x)
    x = conv(32, (3, 3), name='Conv2d_2a_3x3')(x)
    x = conv(64, (3, 3), padding=(1, 1), name='Conv2d_2b_3x3')(x)
    x = _max_pool_3x3_s2(x)
    x = conv(80, (1, 1), name='Conv2d_3b_1x1')(x)
    x = conv(192, (3, 3), name='Conv2d_4a_3x3')(x)
    x = _max_pool_3x3_s2(x)
    x = _InceptionA(32, name='Mixed_5b', **p)(x)
    x = _InceptionA(64, name='Mixed_5c', **p)(x)
    x = _InceptionA(64, name='Mixed_5d', **p)(x)
    x = _InceptionB(name='Mixed_6a', **p)(x)
    x = _InceptionC(128, name='Mixed_6b', **p)(x)
    x = _InceptionC(160, name='Mixed_6c', **p)(x)
    x = _InceptionC(160, name='Mixed_6d', **p)(x)
    x = _InceptionC(192, name='Mixed_6e', **p)(x)
    x = _InceptionD(name='Mixed_7a', **p)(x)
    x = _InceptionE(use_max_pool=False, name='Mixed_7b', **p)(x)
    x = _InceptionE(use_max_pool=True, name='Mixed_7c', **p)(x)
    return jnp.mean(x, axis=(1, 2))


# ----------------------------------------------------------------------------
# Weights: the state dict of pretrained/inception_weights.py as variables.
# ----------------------------------------------------------------------------


def _abstract_variables():
  return jax.eval_shape(
      FIDInceptionV3().init, jax.random.key(0),
      jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32))


def state_dict_to_variables(state: Mapping[str, np.ndarray]) -> dict:
  """Maps a PyTorch FID-Inception state dict to FIDInceptionV3 variables.

  Args:
    state: key -> array with the .pth's key names and PyTorch layouts.

  Returns:
    {'params': ..., 'batch_stats': ...} float32 numpy leaves.

  Raises:
    InceptionWeightsError: a key is missing, unexpected or has a wrong shape.
  """
  return inception_weights.map_state_dict(state, _abstract_variables())


def load_inception_params(path: str, *, verify_sha256: bool = True,
                          setting: str = inception_weights.CONFIG_KEY) -> dict:
  """Loads FIDInceptionV3 variables from a .pth or .npz weights file.

  Args:
    path: `pt_inception-2015-12-05-6726825d.pth` (needs torch) or an .npz of
      the same keys (float16 or float32 values; cast to float32).
    verify_sha256: see `inception_weights.read_state_dict`.
    setting: the config key or flag named in the missing-file message.

  Returns:
    {'params': ..., 'batch_stats': ...} for `FIDInceptionV3().apply`.
  """
  return state_dict_to_variables(inception_weights.read_state_dict(
      path, verify_sha256=verify_sha256, setting=setting))


# ----------------------------------------------------------------------------
# Preprocessing: PyTorch's bilinear resize (align_corners=False, no
# antialiasing) to 299x299, then scaling to [-1, 1].
# ----------------------------------------------------------------------------


def _linear_taps(in_size: int, out_size: int):
  """Source indices and weights of PyTorch's bilinear, align_corners=False.

  As PyTorch's CPU kernel: scale in float32, source coordinate
  scale * (dst + 0.5) - 0.5 evaluated in double and stored as float32,
  clamped at 0; two taps, the second clamped at the last pixel.
  """
  scale = np.float32(np.float32(in_size) / np.float32(out_size))
  dst = np.arange(out_size, dtype=np.float64)
  src = (np.float64(scale) * (dst + 0.5) - 0.5).astype(np.float32)
  src = np.maximum(src, np.float32(0))
  i0 = np.minimum(np.floor(src).astype(np.int32), in_size - 1)
  i1 = np.minimum(i0 + 1, in_size - 1)
  w1 = np.clip(src - i0.astype(np.float32), 0, 1).astype(np.float32)
  w0 = (np.float32(1) - w1).astype(np.float32)
  return i0, i1, w0, w1


def _resize_axis(x, axis: int, out_size: int):
  in_size = x.shape[axis]
  if in_size == out_size:
    return x  # PyTorch's weights are exactly (1, 0) here.
  i0, i1, w0, w1 = _linear_taps(in_size, out_size)
  shape = [1] * x.ndim
  shape[axis] = out_size
  w0, w1 = jnp.asarray(w0).reshape(shape), jnp.asarray(w1).reshape(shape)
  return (jnp.take(x, jnp.asarray(i0), axis=axis) * w0 +
          jnp.take(x, jnp.asarray(i1), axis=axis) * w1)


def resize_bilinear(images, height: int, width: int):
  """Resizes like torch's F.interpolate(bilinear, align_corners=False).

  No antialiasing on downsampling (unlike `jax.image.resize`); aspect ratio
  not kept.

  Args:
    images: [B, H, W, C] float.
    height: output height.
    width: output width.

  Returns:
    [B, height, width, C], same dtype.
  """
  return _resize_axis(_resize_axis(images, 2, width), 1, height)


def preprocess(images):
  """Turns images into the network's input, as pytorch-fid does.

  Args:
    images: [B, H, W, 3] RGB, any H and W: uint8 in [0, 255], or float in
      [-1, 1] (generator outputs). Both are first mapped to [0, 1] (x / 255,
      (x + 1) / 2), the range pytorch-fid resizes in.

  Returns:
    [B, 299, 299, 3] float32 in [-1, 1].
  """
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f'Expected [B, H, W, 3] RGB images, got shape '
                     f'{images.shape}.')
  if images.dtype == jnp.uint8:
    x = images.astype(jnp.float32) / 255.0
  elif jnp.issubdtype(images.dtype, jnp.floating):
    x = (images.astype(jnp.float32) + 1.0) / 2.0
  else:
    raise ValueError(f'Images must be uint8 or float, got {images.dtype}.')
  x = resize_bilinear(x, INPUT_SIZE, INPUT_SIZE)
  return 2.0 * x - 1.0


def uint8_to_float(images: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] -> float32 [-1, 1] (the generator's range, x/127.5 - 1)."""
  return np.asarray(images, np.float32) / np.float32(127.5) - np.float32(1)


# ----------------------------------------------------------------------------
# Sharded feature extraction.
# ----------------------------------------------------------------------------

# Module-level jitted functions: their compilation caches are shared by all
# feature extractors (same shapes and shardings compile once per process).
_preprocess_jit = jax.jit(preprocess)


@jax.jit
def _network_jit(variables, x):
  return FIDInceptionV3().apply(variables, x)


def _default_mesh() -> jax.sharding.Mesh:
  return jax.sharding.Mesh(np.asarray(jax.devices()), ('data',))


class FeatureExtractor:
  """Callable: images -> pool3 features, batch sharded over mesh axis 'data'.

  Built by `make_feature_fn`. Parameters are replicated on every device of
  the mesh; each batch is padded to a multiple of the 'data' axis size (or
  to `batch_size`), placed with NamedSharding(mesh, P('data')), resized and
  run through the network by two jitted functions (the network compiles once
  per batch size, whatever the image size).
  """

  def __init__(self, variables, mesh: Optional[jax.sharding.Mesh] = None,
               batch_size: Optional[int] = None):
    self.mesh = mesh if mesh is not None else _default_mesh()
    if 'data' not in self.mesh.axis_names:
      raise ValueError(f'The mesh needs a \'data\' axis, has '
                       f'{self.mesh.axis_names}.')
    self.num_shards = self.mesh.shape['data']
    if batch_size is not None:
      batch_size = -(-batch_size // self.num_shards) * self.num_shards
    self.batch_size = batch_size
    self.data_sharding = jax.sharding.NamedSharding(
        self.mesh, jax.sharding.PartitionSpec('data'))
    replicated = jax.sharding.NamedSharding(self.mesh,
                                            jax.sharding.PartitionSpec())
    self.variables = jax.device_put(variables, replicated)

  def _padded_size(self, n: int) -> int:
    if self.batch_size is not None:
      return self.batch_size
    return -(-n // self.num_shards) * self.num_shards

  def device_features(self, images) -> jax.Array:
    """Features of one batch, left on the devices.

    Args:
      images: [B, H, W, 3] uint8 or float in [-1, 1], numpy or jax.Array;
        B at most `batch_size` when that is set.

    Returns:
      [B', 2048] float32 jax.Array sharded over 'data'; B' >= B is the padded
      batch size, rows past B are padding.
    """
    n = images.shape[0]
    size = self._padded_size(n)
    if n > size:
      raise ValueError(f'Batch of {n} exceeds batch_size {size}.')
    if size != n:
      images = np.asarray(images)  # Host arrays (single process) are padded.
      pad = np.zeros((size - n,) + images.shape[1:], images.dtype)
      images = np.concatenate([images, pad])
    images = jax.device_put(images, self.data_sharding)
    return _network_jit(self.variables, _preprocess_jit(images))

  def __call__(self, images) -> np.ndarray:
    """Pool3 features of images.

    Args:
      images: [N, H, W, 3] uint8 in [0, 255] or float in [-1, 1] (dtype
        decides), any N, H, W; numpy, or a global jax.Array (multi-process:
        pass global arrays whose batch divides the 'data' axis).

    Returns:
      [N, 2048] float64 numpy features.
    """
    n = images.shape[0]
    step = self.batch_size or max(n, 1)
    chunks = []
    for start in range(0, n, step):
      out = self.device_features(images[start:start + step])
      if not out.is_fully_addressable:
        out = multihost_utils.process_allgather(out, tiled=True)
      chunks.append(np.asarray(jax.device_get(out))[:min(step, n - start)])
    if not chunks:
      return np.zeros((0, FEATURE_DIM), np.float64)
    return np.concatenate(chunks).astype(np.float64)


def make_feature_fn(variables, mesh: Optional[jax.sharding.Mesh] = None,
                    batch_size: Optional[int] = None
                    ) -> Callable[[Any], np.ndarray]:
  """Returns images -> float64 pool3 features, sharded over mesh 'data'.

  Args:
    variables: from `load_inception_params`.
    mesh: a mesh with a 'data' axis (other axes replicate); default: all
      devices along 'data'.
    batch_size: if set, images are processed in chunks of this size (rounded
      up to a multiple of the 'data' axis size), the last one padded, so the
      network compiles once. If None, each call is one batch padded to a
      multiple of the 'data' axis size.

  Returns:
    A `FeatureExtractor`: call it on [N, H, W, 3] images, uint8 in [0, 255]
    or float in [-1, 1] (as the generator outputs them), of any size; it
    returns [N, 2048] float64 numpy features.
  """
  return FeatureExtractor(variables, mesh=mesh, batch_size=batch_size)
