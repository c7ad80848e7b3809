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
a new vector inside a region, the old one elsewhere). `synth.noise(seed, n,
stream=s)` is the scheme of noise.py: vector i depends on (seed, stream, i)
only, not on n or on how the calls are batched.

The pieces live below this module: the noise (noise.py), the padded batch
runner (batching.py), checkpoint reading (checkpointing.py, export_format.py),
the BN refresh of an EMA generator (ema_refresh.py), the image geometry
(geometry.py).

  synth = inference.Synthesizer.load('runs/ade20k_export')
  images = synth.generate(label, seed=0)            # [B, H, W, 3] in [-1, 1]
  grid = synth.sample(label, num_samples=4, seed=1)  # [B, 4, H, W, 3]
  edited, z = synth.resample_region(label, z, region={5, 7}, seed=2)
  frames = synth.interpolate(label[0], z0, z1, num_steps=8)
"""

import functools
import json
import os
from typing import Any, Optional, Union

from absl import logging
import jax
import ml_collections
import numpy as np

from oasis_jax.runtime import batching
from oasis_jax.inference import export_format
from oasis_jax.training import checkpointing
from oasis_jax.config import workdir as workdir_config
from oasis_jax.pretrained import oasis as oasis_weights
from oasis_jax.training import ema_refresh
from data_pipelines import geometry
from oasis_jax.runtime import logging_utils
from oasis_jax.inference import noise as noise_lib
from data_pipelines import palettes
from oasis_jax.runtime import sharding
from oasis_jax.training import steps
from oasis_jax.training import train_state as train_state_lib

_DEFAULT_BATCH = 8  # Images per device call (rounded up to the devices).

# Used by the notebook and the tests: random variables (no checkpoint needed)
# and the pixels of a region.
random_variables = train_state_lib.random_generator_variables
region_mask = noise_lib.region_mask


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
  """jit(generate), shared by Synthesizers of the same model and devices.

  The variables are replicated, the batch is split on 'data'.
  """
  config = ml_collections.ConfigDict(json.loads(config_key))
  full = ml_collections.ConfigDict({
      'generator': config.generator, 'perf': config.perf,
      'data': {'num_classes': config.num_classes,
               'aspect_ratio': config.aspect_ratio}})
  replicated, batch = sharding.replicated(mesh), sharding.batch_sharding(mesh)
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
  return jax.sharding.Mesh(np.asarray(devices), (sharding.DATA_AXIS,),
                           axis_types=(jax.sharding.AxisType.Auto,))


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
    config = workdir_config.read(workdir)
  directory, found = checkpointing.find_checkpoint(workdir, step)
  variables, kind = checkpointing.restore_generator(directory, found, config)
  if kind != 'ema':
    refresh_batches = 0  # G's own running statistics are current.
  elif refresh_batches is None:
    refresh_batches = int(config.ema.bn_refresh_batches)
  variables = ema_refresh.refresh_statistics(config, variables, found,
                                             refresh_batches)
  source = f'{os.path.abspath(workdir)} step {found} ({kind}'
  source += (f', BN statistics refreshed over {refresh_batches} batches)'
             if refresh_batches else ')')
  return config, variables, {'step': found, 'kind': kind,
                             'refresh_batches': refresh_batches,
                             'source': source}


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
    self.batch_size = batching.rounded_batch_size(
        _DEFAULT_BATCH if batch_size is None else batch_size,
        self._mesh.devices.size)
    expected = jax.eval_shape(
        lambda: train_state_lib.init_variables(config, jax.random.PRNGKey(0)))
    oasis_weights.check_against(
        variables, {'params': expected[0][0], 'batch_stats': expected[0][1]},
        f'the generator variables of {source or "the Synthesizer"}')
    replicated = jax.sharding.NamedSharding(self._mesh,
                                            jax.sharding.PartitionSpec())
    self._variables = jax.device_put(
        {'params': variables['params'],
         'batch_stats': variables.get('batch_stats', {})}, replicated)
    self._batch_sharding = sharding.batch_sharding(self._mesh)
    self._key = _config_key(config)
    self.palette = _palette(config)

  # ---- constructors ------------------------------------------------------

  @classmethod
  def from_checkpoint(cls, path: str, **kwargs) -> 'Synthesizer':
    """From an inference checkpoint (export / convert_torch output)."""
    config, variables, manifest = export_format.load_inference(path)
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
    variables = oasis_weights.convert_file(
        path, {'params': g_p, 'batch_stats': g_s})
    return cls(config, variables, source=f'official weights {path}', **kwargs)

  @classmethod
  def load(cls, path: str, **kwargs) -> 'Synthesizer':
    """An inference checkpoint or a training workdir (its latest step)."""
    if export_format.is_inference_checkpoint(path):
      return cls.from_checkpoint(path, **kwargs)
    if os.path.isfile(os.path.join(path, workdir_config.CONFIG_FILE)):
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
    return geometry.image_hw(self.config.data)

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
    return noise_lib.noise(seed, num, self._require_z(), stream=stream,
                           offset=offset)

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
    aspect = self.config.data.aspect_ratio
    scale = 2**(self.config.generator.num_res_blocks - 1)
    if (h != geometry.image_height(w, aspect) or h % scale or w % scale):
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
    if not len(label):
      return np.zeros(label.shape + (3,), np.float32)
    fn = _compiled_forward(self._key, self._mesh, z is not None)
    inputs = [label] if z is None else [label, z]
    return batching.run_padded(functools.partial(fn, self._variables), inputs,
                               self.batch_size, self._batch_sharding)

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

  def resample_region(
      self, label, z, region: noise_lib.Region, *, seed: int = 1,
      stream: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Local editing: new noise inside a region, the old noise elsewhere.

    Args:
      label: [H, W] or [B, H, W] class ids.
      z: the current noise ([z_dim], [B, z_dim], [H, W, z_dim] or
        [B, H, W, z_dim]).
      region: a boolean mask ([H, W] or [B, H, W]) or class id(s).
      seed: the seed of the region's new noise: image i gets one new vector,
        `noise(seed, B, stream=stream ^ noise.EDIT_STREAM)[i]` (independent of
        the noise `generate` draws with the same seed).
      stream: folded into the seed.

    Returns:
      (images [B, H, W, 3] in [-1, 1], the edited noise [B, H, W, z_dim]
      to chain further edits).
    """
    label = self.check_label(label)
    b, h, w = label.shape
    z = self._as_noise(z, b, h, w)
    mask = noise_lib.region_mask(label, region)
    new = self.noise(seed, b, stream=stream ^ noise_lib.EDIT_STREAM)
    z_edit = noise_lib.edit_noise(z, mask, new)
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
    path = noise_lib.interpolate_noise(z0, z1, num_steps, method)
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
