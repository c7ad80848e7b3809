"""Inference with a trained OASIS generator: images, local edits, interpolation.

A `Synthesizer` holds one generator's variables on the devices and a jitted,
batched eval-mode forward. Load it from

  (a) an inference checkpoint (`python -m oasis_jax.export` or
      `python -m oasis_jax.convert_torch`): `Synthesizer.from_checkpoint(dir)`;
  (b) a training workdir (the EMA generator of the latest, best or a given
      step, its BN statistics refreshed): `Synthesizer.from_workdir(dir)`;
  (c) official PyTorch weights: `Synthesizer.from_official(config, ema=...)`.

Noise: the generator takes z of shape [B, z_dim] (one vector per image,
broadcast to every pixel) or [B, H, W, z_dim] (per-pixel, for local editing:
a new vector inside a region, the old one elsewhere). `noise(seed, n,
stream=s)` is deterministic: vector i depends on (seed, stream, i) only, not
on n or on how the calls are batched.

  synth = inference.Synthesizer.load('runs/ade20k_export')
  images = synth.generate(label, seed=0)            # [B, H, W, 3] in [-1, 1]
  grid = synth.sample(label, num_samples=4, seed=1)  # [B, 4, H, W, 3]
  edited, z = synth.resample_region(label, z, region={5, 7}, seed=2)
  frames = synth.interpolate(label[0], z0, z1, num_steps=8)
"""

import functools
import json
import os
from typing import Any, Collection, Optional, Union

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from oasis_jax import convert_torch
from oasis_jax import inference_checkpoint
from oasis_jax import logging_utils
from oasis_jax import palettes
from oasis_jax import steps
from oasis_jax import train_state as train_state_lib

DATA_AXIS = 'data'
EDIT_STREAM = 0x3D17ED  # Folded into the seed of the noise of local edits.
_DEFAULT_BATCH = 8  # Images per device call (rounded up to the devices).

Region = Union[np.ndarray, int, Collection[int]]


# --------------------------------------------------------------------------
# Noise helpers (pure; usable without a Synthesizer).


@functools.partial(jax.jit, static_argnums=(3, 4))
def _noise(seed, stream, offset, num, z_dim):
  key = jax.random.fold_in(jax.random.PRNGKey(seed), stream)
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(
      offset + jnp.arange(num))
  return jax.vmap(lambda k: jax.random.normal(k, (z_dim,)))(keys)


def noise(seed: int, num: int, z_dim: int, *, stream: int = 0,
          offset: int = 0) -> np.ndarray:
  """Deterministic z ~ N(0, I): vector i from (seed, stream, offset + i).

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


def random_variables(config, seed: int = 0, gain: float = 1.0):
  """An untrained generator's variables, drawn with numpy (nothing compiled).

  For tests and demos without a checkpoint: Xavier-normal kernels times
  `gain` (the official init uses 0.02), zero biases, random unit
  spectral-norm vectors, BN statistics mean 0, variance 1.

  Returns:
    {'params': ..., 'batch_stats': ...} of numpy arrays.
  """
  (params, stats), _ = jax.eval_shape(
      lambda: train_state_lib.init_variables(config, jax.random.PRNGKey(0)))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    shape = leaf.shape
    if name == 'kernel':
      kh, kw, cin, cout = shape
      std = gain * np.sqrt(2.0 / (kh * kw * (cin + cout)))
      return (std * rng.standard_normal(shape)).astype(np.float32)
    if name in ('u', 'v'):
      x = rng.standard_normal(shape)
      return (x / np.linalg.norm(x)).astype(np.float32)
    if name == 'var':
      return np.ones(shape, np.float32)
    return np.zeros(shape, np.float32)  # bias, mean

  return {'params': jax.tree_util.tree_map_with_path(fill, params),
          'batch_stats': jax.tree_util.tree_map_with_path(fill, stats)}


# --------------------------------------------------------------------------
# Compiled forwards, shared by Synthesizers of the same model and devices.


def _config_key(config) -> str:
  """What of the config decides the generator's computation."""
  return json.dumps({'generator': config.generator.to_dict(),
                     'num_classes': int(config.data.num_classes),
                     'aspect_ratio': float(config.data.aspect_ratio),
                     'perf': config.perf.to_dict()}, sort_keys=True,
                    default=str)


@functools.lru_cache(maxsize=16)
def _compiled_forward(config_key: str, mesh: jax.sharding.Mesh,
                      with_z: bool):
  """jit(generate) with the variables replicated, the batch split on 'data'."""
  config = ml_collections.ConfigDict(json.loads(config_key))
  full = ml_collections.ConfigDict({
      'generator': config.generator, 'perf': config.perf,
      'data': {'num_classes': config.num_classes,
               'aspect_ratio': config.aspect_ratio}})
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(
      DATA_AXIS))
  if with_z:
    fn = lambda v, label, z: steps.generate(v, label, z, config=full)
    in_shardings = (replicated, batch, batch)
  else:
    fn = lambda v, label: steps.generate(v, label, None, config=full)
    in_shardings = (replicated, batch)
  return jax.jit(fn, in_shardings=in_shardings, out_shardings=batch)


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D 'data' mesh over this process's devices (or `devices`)."""
  devices = list(jax.local_devices() if devices is None else devices)
  return jax.sharding.Mesh(np.asarray(devices), (DATA_AXIS,),
                           axis_types=(jax.sharding.AxisType.Auto,))


# --------------------------------------------------------------------------
# The Synthesizer.


class Synthesizer:
  """A generator on the devices, with a jitted batched eval-mode forward.

  Attributes:
    config: the model's configuration.
    source: where the weights came from (free text).
    palette: [num_classes, 3] uint8 colours of the class ids.
    batch_size: images per device call (a multiple of the device count);
      longer inputs are split, the last call padded.
  """

  def __init__(self, config: ml_collections.ConfigDict, variables: Any, *,
               source: str = '', batch_size: Optional[int] = None,
               devices=None):
    """Places `variables` ({'params', 'batch_stats'}) on the devices."""
    self.config = config
    self.source = source
    self._mesh = make_mesh(devices)
    n = self._mesh.devices.size
    batch_size = _DEFAULT_BATCH if batch_size is None else int(batch_size)
    self.batch_size = max(n, -(-batch_size // n) * n)
    expected = jax.eval_shape(
        lambda: train_state_lib.init_variables(config, jax.random.PRNGKey(0)))
    convert_torch.check_against(
        variables, {'params': expected[0][0], 'batch_stats': expected[0][1]},
        f'the generator variables of {source or "the Synthesizer"}')
    replicated = jax.sharding.NamedSharding(self._mesh,
                                            jax.sharding.PartitionSpec())
    self._variables = jax.device_put(
        {'params': variables['params'],
         'batch_stats': variables.get('batch_stats', {})}, replicated)
    self._batch_sharding = jax.sharding.NamedSharding(
        self._mesh, jax.sharding.PartitionSpec(DATA_AXIS))
    self._key = _config_key(config)
    self.palette = _palette(config)

  # ---- constructors ------------------------------------------------------

  @classmethod
  def from_checkpoint(cls, path: str, **kwargs) -> 'Synthesizer':
    """From an inference checkpoint (export / convert_torch output)."""
    config, variables, manifest = inference_checkpoint.load(path)
    source = manifest.get('source') or path
    return cls(config, variables['generator'],
               source=f'{path} ({manifest.get("generator", "?")}: {source})',
               **kwargs)

  @classmethod
  def from_workdir(cls, workdir: str, step: Union[str, int] = 'latest', *,
                   config: Optional[ml_collections.ConfigDict] = None,
                   refresh_batches: Optional[int] = None,
                   **kwargs) -> 'Synthesizer':
    """From a training workdir: the EMA generator (or G without EMA).

    Args:
      workdir: the run folder (holds config.json and checkpoints/).
      step: 'latest', 'best' (checkpoint_best/) or a step number.
      config: the run's config (default: workdir/config.json).
      refresh_batches: train-mode passes re-estimating the EMA generator's
        BN statistics (default config.ema.bn_refresh_batches; 0: none).
      **kwargs: passed to the constructor.
    """
    config, variables, info = load_workdir_generator(
        workdir, step, config=config, refresh_batches=refresh_batches)
    return cls(config, variables, source=info['source'], **kwargs)

  @classmethod
  def from_official(cls, config: ml_collections.ConfigDict, *,
                    generator: str = '', ema: str = '',
                    **kwargs) -> 'Synthesizer':
    """From official PyTorch weights (`*_EMA.pth` preferred, else `*_G.pth`).

    Args:
      config: a config whose sizes match the weights (configs/<data set>.py).
      generator: the official `*_G.pth` (or its `.npz`).
      ema: the official `*_EMA.pth` (or `.npz`); used when given.
    """
    path = ema or generator
    if not path:
      raise ValueError('from_official needs generator= or ema= (a .pth or '
                       '.npz state_dict of the official code).')
    g_p, g_s = jax.eval_shape(lambda: train_state_lib.init_variables(
        config, jax.random.PRNGKey(0)))[0]
    variables = convert_torch.convert_file(
        path, {'params': g_p, 'batch_stats': g_s})
    return cls(config, variables, source=f'official weights {path}', **kwargs)

  @classmethod
  def load(cls, path: str, **kwargs) -> 'Synthesizer':
    """An inference checkpoint or a training workdir (its latest step)."""
    if inference_checkpoint.is_inference_checkpoint(path):
      return cls.from_checkpoint(path, **kwargs)
    if os.path.isfile(os.path.join(path, 'config.json')):
      return cls.from_workdir(path, **kwargs)
    raise FileNotFoundError(
        f'{path} is neither an inference checkpoint nor a training workdir '
        '(no oasis_inference.json, no config.json).')

  # ---- properties ----------------------------------------------------------

  @property
  def num_classes(self) -> int:
    return int(self.config.data.num_classes)

  @property
  def z_dim(self) -> Optional[int]:
    """The noise size, None for a model without 3D noise."""
    g = self.config.generator
    return int(g.z_dim) if g.use_3d_noise else None

  @property
  def image_hw(self) -> tuple[int, int]:
    """(H, W) of the configured image size."""
    return train_state_lib.image_hw(self.config)

  @property
  def num_devices(self) -> int:
    return int(self._mesh.devices.size)

  def __repr__(self) -> str:
    h, w = self.image_hw
    return (f'Synthesizer({self.num_classes} classes, {h}x{w}, z_dim='
            f'{self.z_dim}, {self.num_devices} device(s), source='
            f'{self.source!r})')

  # ---- noise ---------------------------------------------------------------

  def noise(self, seed: int, num: int, *, stream: int = 0,
            offset: int = 0) -> np.ndarray:
    """[num, z_dim] deterministic noise (see the module docstring)."""
    return noise(seed, num, self._require_z(), stream=stream, offset=offset)

  def _require_z(self) -> int:
    if self.z_dim is None:
      raise ValueError('This generator has no 3D noise '
                       '(config.generator.use_3d_noise=False): its output '
                       'is determined by the label map.')
    return self.z_dim

  # ---- generation ----------------------------------------------------------

  def check_label(self, label, what: str = 'label map') -> np.ndarray:
    """Validates class ids; returns int32 [B, H, W] (a [H, W] gets B = 1).

    Raises:
      ValueError: not integers, ids outside [0, num_classes), or a size the
        generator cannot take; the message names `what`.
    """
    label = np.asarray(label)
    if label.ndim == 2:
      label = label[None]
    if label.ndim != 3:
      raise ValueError(f'{what}: expected [H, W] or [B, H, W] class ids, got '
                       f'shape {label.shape}.')
    if not np.issubdtype(label.dtype, np.integer):
      raise ValueError(f'{what}: class ids must be integers, got '
                       f'{label.dtype}.')
    if label.size and (label.min() < 0 or label.max() >= self.num_classes):
      bad = np.unique(label[(label < 0) | (label >= self.num_classes)])
      raise ValueError(
          f'{what}: class ids {bad[:10].tolist()} are outside [0, '
          f'{self.num_classes}) (the model has {self.num_classes} classes).')
    h, w = label.shape[1:]
    g = self.config.generator
    scale = 2**(g.num_res_blocks - 1)
    lh = round((w // scale) / self.config.data.aspect_ratio)
    if w % scale or (lh * scale, w) != (h, w):
      eh, ew = self.image_hw
      raise ValueError(
          f'{what}: {h}x{w} (HxW) does not fit the generator (width a '
          f'multiple of {scale}, aspect ratio {self.config.data.aspect_ratio}'
          f'); e.g. {eh}x{ew}. Resize it (nearest) first.')
    return label.astype(np.int32)

  def _as_noise(self, z, b: int, h: int, w: int) -> np.ndarray:
    """z of any accepted shape -> [B, z_dim] or [B, H, W, z_dim] float32."""
    z_dim = self._require_z()
    z = np.asarray(z, np.float32)
    if z.shape == (z_dim,):
      z = np.broadcast_to(z, (b, z_dim))
    elif z.shape == (h, w, z_dim):
      z = np.broadcast_to(z, (b, h, w, z_dim))
    if z.shape not in ((b, z_dim), (b, h, w, z_dim)):
      raise ValueError(f'z must be [z_dim], [B, z_dim], [H, W, z_dim] or '
                       f'[B, H, W, z_dim] with B={b}, H={h}, W={w}, z_dim='
                       f'{z_dim}; got {z.shape}.')
    return z

  def _run(self, label: np.ndarray, z: Optional[np.ndarray]) -> np.ndarray:
    """The batched forward: [N, H, W] ids (+ z) -> [N, H, W, 3] float32."""
    fn = _compiled_forward(self._key, self._mesh, z is not None)
    n, bs = len(label), self.batch_size
    outs, pending = [], None
    for start in range(0, n, bs):
      args = [label[start:start + bs]]
      if z is not None:
        args.append(z[start:start + bs])
      count = len(args[0])
      if count < bs:  # Pad the last call to the compiled batch size.
        args = [np.concatenate([a, np.zeros((bs - count,) + a.shape[1:],
                                            a.dtype)]) for a in args]
      args = [jax.device_put(np.ascontiguousarray(a), self._batch_sharding)
              for a in args]
      out = fn(self._variables, *args)
      if pending is not None:  # Fetch the previous call while this one runs.
        outs.append(np.asarray(pending[0])[:pending[1]])
      pending = (out, count)
    if pending is not None:
      outs.append(np.asarray(pending[0])[:pending[1]])
    if not outs:
      return np.zeros((0,) + label.shape[1:] + (3,), np.float32)
    return np.concatenate(outs)

  def generate(self, label, *, seed: int = 0, z=None,
               stream: int = 0) -> np.ndarray:
    """Images for label maps.

    Args:
      label: [H, W] or [B, H, W] integer class ids.
      seed: the noise seed, when `z` is not given: image i gets
        `noise(seed, B, stream=stream)[i]`.
      z: explicit noise: [z_dim] (every image), [B, z_dim], [H, W, z_dim] or
        [B, H, W, z_dim] (per pixel).
      stream: folded into the seed (independent noise streams).

    Returns:
      [B, H, W, 3] float32 in [-1, 1].
    """
    label = self.check_label(label)
    b, h, w = label.shape
    if self.z_dim is None:
      if z is not None:
        raise ValueError('This generator has no 3D noise; do not pass z.')
      return self._run(label, None)
    if z is None:
      z = self.noise(seed, b, stream=stream)
    return self._run(label, self._as_noise(z, b, h, w))

  def sample(self, label, num_samples: int, *, seed: int = 0,
             streams=None) -> np.ndarray:
    """`num_samples` images per label map (multi-modal synthesis).

    Sample k of label map i uses `noise(seed, num_samples,
    stream=streams[i])[k]`; by default every stream is 0, so column k has
    the same noise for every label map.

    Args:
      label: [H, W] or [B, H, W] class ids.
      num_samples: samples per label map.
      seed: the noise seed.
      streams: optional [B] ints, one noise stream per label map.

    Returns:
      [B, num_samples, H, W, 3] float32 in [-1, 1].
    """
    label = self.check_label(label)
    b, h, w = label.shape
    k = int(num_samples)
    labels = np.repeat(label, k, axis=0)
    if self.z_dim is None:
      return self._run(labels, None).reshape(b, k, h, w, 3)
    streams = [0] * b if streams is None else list(streams)
    if len(streams) != b:
      raise ValueError(f'{len(streams)} streams for {b} label maps.')
    z = np.concatenate([self.noise(seed, k, stream=s) for s in streams])
    return self._run(labels, z).reshape(b, k, h, w, 3)

  def resample_region(self, label, z, region: Region, *, seed: int = 1,
                      stream: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Local editing: new noise inside a region, the old noise elsewhere.

    Args:
      label: [H, W] or [B, H, W] class ids.
      z: the current noise ([z_dim], [B, z_dim], [H, W, z_dim] or
        [B, H, W, z_dim]).
      region: a boolean mask ([H, W] or [B, H, W]) or class id(s).
      seed: the seed of the region's new noise: image i gets one new vector,
        `noise(seed, B, stream=stream ^ EDIT_STREAM)[i]` (independent of
        the noise `generate` draws with the same seed).
      stream: folded into the seed.

    Returns:
      (images [B, H, W, 3] in [-1, 1], the edited noise [B, H, W, z_dim]
      to chain further edits).
    """
    label = self.check_label(label)
    b, h, w = label.shape
    z = self._as_noise(z, b, h, w)
    mask = region_mask(label, region)
    new = self.noise(seed, b, stream=stream ^ EDIT_STREAM)
    z_edit = edit_noise(z, mask, new)
    return self._run(label, z_edit), z_edit

  def interpolate(self, label, z0, z1, num_steps: int = 8, *,
                  method: str = 'slerp') -> np.ndarray:
    """Images of one label map along a path from noise z0 to z1.

    Args:
      label: [H, W] class ids (or [1, H, W]).
      z0, z1: [z_dim] or [H, W, z_dim] noises (the ends, included).
      num_steps: images along the path.
      method: 'slerp' or 'linear'.

    Returns:
      [num_steps, H, W, 3] float32 in [-1, 1].
    """
    label = self.check_label(label)
    if label.shape[0] != 1:
      raise ValueError(f'interpolate takes one label map; got {label.shape}.')
    _, h, w = label.shape
    z0 = self._as_noise(z0, 1, h, w)[0]
    z1 = self._as_noise(z1, 1, h, w)[0]
    path = interpolate_noise(z0, z1, num_steps, method)
    return self._run(np.repeat(label, num_steps, axis=0), path)

  # ---- display -------------------------------------------------------------

  def colorize(self, label) -> np.ndarray:
    """Class ids [..., H, W] -> uint8 colours [..., H, W, 3]."""
    return palettes.colorize(np.asarray(label), self.palette)

  @staticmethod
  def to_uint8(images) -> np.ndarray:
    """Images in [-1, 1] -> uint8 in [0, 255]."""
    return logging_utils.to_uint8(images)


def _palette(config) -> np.ndarray:
  """palettes.for_config, or generic colours if a palette file is missing."""
  try:
    return palettes.for_config(config)
  except (OSError, ValueError) as e:
    logging.warning('Palette of config.data unavailable (%s); using generic '
                    'colours.', e)
    return palettes.generic_palette(int(config.data.num_classes))


# --------------------------------------------------------------------------
# Training workdirs. (The training stack - train, checkpointing, the input
# pipeline - is imported only here: loading a checkpoint does not need it.)


def read_workdir_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was started with (workdir/config.json)."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f'{path} is missing: {workdir} is not a training workdir of '
        '`python -m oasis_jax.main` (or pass the config explicitly).')
  with open(path) as f:
    return inference_checkpoint.config_from_json(f.read())


def _read_only_manager(directory: str):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  return ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(read_only=True,
                                                      create=False))


def find_checkpoint(workdir: str, step: Union[str, int] = 'latest'
                    ) -> tuple[str, int]:
  """(checkpoint manager directory, step) of 'latest', 'best' or a step.

  Raises:
    FileNotFoundError: no such checkpoint; the message lists what exists.
  """
  from oasis_jax import checkpointing  # pylint: disable=g-import-not-at-top
  main_dir = os.path.join(workdir, checkpointing.CHECKPOINT_DIR)
  best_dir = os.path.join(workdir, checkpointing.BEST_CHECKPOINT_DIR)
  steps_of = lambda d: (list(_read_only_manager(d).all_steps())
                        if os.path.isdir(d) else [])
  if step == 'best':
    found = steps_of(best_dir)
    if not found:
      raise FileNotFoundError(
          f'{best_dir}: no best checkpoint (written only when the run '
          'evaluates config.eval.best_metric); use step=latest.')
    return best_dir, max(found)
  main_steps = steps_of(main_dir)
  if step == 'latest':
    if not main_steps:
      raise FileNotFoundError(f'{main_dir}: no checkpoints.')
    return main_dir, max(main_steps)
  try:
    step = int(step)
  except (TypeError, ValueError):
    raise ValueError(f"step must be 'latest', 'best' or a step number, got "
                     f'{step!r}.') from None
  if step in main_steps:
    return main_dir, step
  if step in steps_of(best_dir):
    return best_dir, step
  raise FileNotFoundError(f'{workdir}: no checkpoint of step {step}; steps: '
                          f'{sorted(main_steps)} (best: {steps_of(best_dir)}).')


def _restore_part(directory: str, step: int, target):
  """Reads the subtree `target` (ShapeDtypeStructs) of a saved TrainState."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  restore_args = jax.tree.map(
      lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
  restored = _read_only_manager(directory).restore(
      step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
          item=target, restore_args=restore_args, partial_restore=True)))
  return jax.tree.map(np.asarray, restored['state'])


def restore_generator(directory: str, step: int, config) -> tuple[Any, str]:
  """Reads only the generator to sample from out of a saved TrainState.

  Returns:
    ({'params', 'batch_stats'} numpy arrays, 'ema' or 'generator').
  """
  from oasis_jax import train  # pylint: disable=g-import-not-at-top
  abstract = train.abstract_train_state(config)
  if abstract.ema is not None:
    return dict(_restore_part(directory, step,
                              {'ema': abstract.ema})['ema']), 'ema'
  g = abstract.generator
  target = {'generator': {'params': g.params, 'batch_stats': g.batch_stats}}
  return dict(_restore_part(directory, step, target)['generator']), 'generator'


def restore_discriminator(directory: str, step: int, config) -> Any:
  """The discriminator's {'params', 'batch_stats'} of a saved TrainState."""
  from oasis_jax import train  # pylint: disable=g-import-not-at-top
  d = train.abstract_train_state(config).discriminator
  target = {'discriminator': {'params': d.params,
                              'batch_stats': d.batch_stats}}
  return dict(_restore_part(directory, step, target)['discriminator'])


def _refresh_mesh(config) -> jax.sharding.Mesh:
  """The most devices (of the 'data' mesh) that divide the train batch."""
  from oasis_jax import sharding  # pylint: disable=g-import-not-at-top
  batch = int(config.train.batch_size)
  n = max(d for d in range(1, jax.device_count() + 1) if batch % d == 0)
  return sharding.make_mesh(n)


def refresh_statistics(config, variables, step: int,
                       num_batches: Optional[int] = None):
  """Re-estimates a generator's BN statistics on training batches.

  `num_batches` (default config.ema.bn_refresh_batches) train-mode forwards
  without gradient over the training split, as train.py does before it
  samples or evaluates the EMA generator (same batches and noise for the
  same step).

  Returns:
    The variables with new batch_stats (numpy); `variables` if 0 batches.
  """
  from oasis_jax import train  # pylint: disable=g-import-not-at-top
  if num_batches is None:
    num_batches = int(config.ema.bn_refresh_batches)
  if num_batches <= 0:
    return variables
  config = ml_collections.ConfigDict(config.to_dict())
  config.ema.bn_refresh_batches = int(num_batches)
  mesh = _refresh_mesh(config)
  refreshed = train.refresh_ema(config, mesh, variables, step)
  return jax.tree.map(np.asarray, jax.device_get(refreshed))


def load_workdir_generator(workdir: str, step: Union[str, int] = 'latest', *,
                           config: Optional[ml_collections.ConfigDict] = None,
                           refresh_batches: Optional[int] = None):
  """The generator to sample from out of a training workdir.

  The EMA generator (the plain generator when config.ema.use_ema is off),
  with its BN statistics refreshed over `refresh_batches` training batches
  (default config.ema.bn_refresh_batches; the EMA of running statistics that
  a checkpoint holds is not what the EMA weights produce).

  Returns:
    (config, {'params', 'batch_stats'} numpy, info dict with 'step',
    'kind', 'refresh_batches', 'source').
  """
  if config is None:
    config = read_workdir_config(workdir)
  directory, found = find_checkpoint(workdir, step)
  variables, kind = restore_generator(directory, found, config)
  if kind != 'ema':
    refresh_batches = 0  # G's own running statistics are current.
  elif refresh_batches is None:
    refresh_batches = int(config.ema.bn_refresh_batches)
  variables = refresh_statistics(config, variables, found, refresh_batches)
  source = f'{os.path.abspath(workdir)} step {found} ({kind}'
  source += (f', BN statistics refreshed over {refresh_batches} batches)'
             if refresh_batches else ')')
  return config, variables, {'step': found, 'kind': kind,
                             'refresh_batches': refresh_batches,
                             'source': source}
