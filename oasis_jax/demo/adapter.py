"""What the demo asks of a generator, over a `synthesis.Synthesizer`."""

import os
from typing import Optional

import numpy as np

from oasis_jax import generate as generate_lib
from oasis_jax.inference import noise as noise_lib
from oasis_jax.inference import synthesis


class DemoError(ValueError):
  """Input the demo cannot use; the message is shown on the page."""


class ModelAdapter:
  """What the demo needs of a generator, over an `synthesis.Synthesizer`.

  Noise is always per pixel, [N, H, W, z_dim], so that sampling, local
  edits and interpolation run the same compiled program.
  """

  def __init__(self, synth: synthesis.Synthesizer):
    if synth.z_dim is None:
      raise DemoError('The demo needs a generator with 3D noise '
                      '(config.generator.use_3d_noise=True): without it '
                      'every sample of a label map is the same.')
    self.synth = synth
    self.num_classes = synth.num_classes
    self.image_hw = tuple(synth.image_hw)
    self.palette = np.asarray(synth.palette, np.uint8)  # [C, 3]
    self.data_config = synth.config.data
    h, w = self.image_hw
    source = os.path.basename(synth.source.split(' ')[0].rstrip('/'))
    self.description = (f'{self.num_classes} classes, {h}x{w} pixels, '
                        f'noise of {synth.z_dim} channels; weights: '
                        f'{source or "?"}')

  def noise(self, seed: int, num: int) -> np.ndarray:
    """Per-pixel noise of `num` samples: [num, H, W, z_dim] float32."""
    h, w = self.image_hw
    z = self.synth.noise(seed, num)
    return np.ascontiguousarray(
        np.broadcast_to(z[:, None, None, :], (num, h, w, z.shape[-1])))

  def render(self, label: np.ndarray, z: np.ndarray) -> np.ndarray:
    """[H, W] ids, [N, H, W, z_dim] noise -> uint8 [N, H, W, 3]."""
    labels = np.repeat(label[None], len(z), axis=0)
    return self.synth.to_uint8(self.synth.generate(labels, z=z))

  def resample(self, label: np.ndarray, z: np.ndarray, mask: np.ndarray,
               seed: int) -> tuple[np.ndarray, np.ndarray]:
    """New noise inside `mask` ([H, W] bool) for every sample.

    Returns:
      (uint8 [N, H, W, 3] images, the edited noise [N, H, W, z_dim]).
    """
    labels = np.repeat(label[None], len(z), axis=0)
    images, z = self.synth.resample_region(labels, z, region=mask, seed=seed)
    return self.synth.to_uint8(images), np.asarray(z, np.float32)

  @staticmethod
  def noise_path(z0: np.ndarray, z1: np.ndarray, num: int) -> np.ndarray:
    """Noises from z0 to z1 (both included): [num, ...]."""
    return noise_lib.interpolate_noise(z0, z1, num, 'slerp')

  def check_label(self, label: np.ndarray, what: str) -> np.ndarray:
    """Class ids the generator takes -> int32 [H, W] (or DemoError)."""
    try:
      return self.synth.check_label(label, what)[0]
    except ValueError as e:
      raise DemoError(str(e)) from None

  def read_label_file(self, path: str) -> np.ndarray:
    """A label PNG (ids or palette colours) -> int32 [H, W] of model size."""
    try:
      return generate_lib.read_label(path, self.num_classes, self.palette,
                                     size=self.image_hw)
    except generate_lib.LabelError as e:
      raise DemoError(str(e)) from None

  def colorize(self, label: np.ndarray) -> np.ndarray:
    """Class ids [..., H, W] -> uint8 [..., H, W, 3]."""
    return self.synth.colorize(label)


def load_synthesizer(checkpoint: Optional[str] = None,
                     workdir: Optional[str] = None,
                     step: str = 'latest') -> synthesis.Synthesizer:
  """The generator of an inference checkpoint or of a training workdir."""
  if checkpoint:
    return synthesis.Synthesizer.from_checkpoint(checkpoint)
  return synthesis.Synthesizer.from_workdir(workdir, step)

