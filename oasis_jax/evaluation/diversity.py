"""Diversity of a generator: mean pairwise MS-SSIM (and LPIPS) per label map.

Several images of the same label map (different noises) should differ: the
mean pairwise MS-SSIM between them (lower: more diverse) and, with
`config.eval.lpips_weights` set, the mean pairwise LPIPS (higher: more
diverse).
"""

from typing import Any, Tuple

import jax
import numpy as np

from oasis_jax.runtime import batching
from oasis_jax.training import input_pipeline
from oasis_jax.evaluation import lpips
from oasis_jax.evaluation import ms_ssim
from oasis_jax.runtime import sharding
from oasis_jax.evaluation import common

DIVERSITY_STREAM = 0xD17E  # Folded into config.seed: the diversity noise.
# MS-SSIM's 5 scales with an 11-pixel window need 161 pixels per side;
# smaller images are enlarged (nearest neighbour) to this many.
MS_SSIM_MIN_SIDE = 161
MS_SSIM_RESIZE_SIDE = 176


def _resize_nearest_images(images: np.ndarray, height: int,
                           width: int) -> np.ndarray:
  rows = (np.arange(height) * images.shape[1]) // height
  cols = (np.arange(width) * images.shape[2]) // width
  return images[:, rows][:, :, cols]


def ms_ssim_size(hw: Tuple[int, int]) -> Tuple[int, int]:
  """The size MS-SSIM sees: hw, or enlarged so the short side is 176."""
  h, w = hw
  if min(h, w) >= MS_SSIM_MIN_SIDE:
    return h, w
  scale = MS_SSIM_RESIZE_SIDE / min(h, w)
  return int(round(h * scale)), int(round(w * scale))


def diversity(config, mesh: jax.sharding.Mesh, variables: common.Variables,
              num_maps: int, num_samples: int) -> dict[str, Any]:
  """Mean pairwise MS-SSIM of `num_samples` images per label map.

  The first `num_maps` validation label maps; sample s of map i gets the
  noise of (config.seed, diversity stream, i * num_samples + s). Images with
  a side under 161 pixels are enlarged (nearest) to a short side of 176.

  Returns:
    {'diversity_ms_ssim': mean over maps (lower: more diverse), and how it
    was computed; with config.eval.lpips_weights set, 'diversity_lpips':
    mean over maps of the mean pairwise LPIPS (higher: more diverse)}.
  """
  if num_samples < 2:
    raise ValueError(f'Diversity needs >= 2 samples per map, got '
                     f'{num_samples}.')
  total = input_pipeline.num_examples(config, 'val')
  num_maps = min(int(num_maps), total)
  bs = common.eval_batch_size(config, mesh)
  labels = [batching.to_host(b['label'])[b['valid']]
            for b in common.eval_batches(config, mesh, bs, num_maps)]
  labels = np.concatenate(labels)[:num_maps]
  generate = common.make_generate_fn(config, mesh, stream=DIVERSITY_STREAM)
  variables = jax.device_put(variables, sharding.replicated(mesh))
  all_labels = np.repeat(labels, num_samples, axis=0).astype(np.int32)
  ids = np.arange(all_labels.shape[0], dtype=np.int32)
  images = batching.run_padded(
      lambda label, idx: generate(variables, label, idx), [all_labels, ids],
      bs, sharding.batch_sharding(mesh), pad_values=[0, -1])
  images = images.reshape(
      (num_maps, num_samples) + all_labels.shape[1:] + (3,))
  hw = images.shape[2:4]
  size = ms_ssim_size(hw)
  values = []
  for per_map in images:
    if size != hw:
      per_map = _resize_nearest_images(per_map, *size)
    values.append(ms_ssim.mean_pairwise_ms_ssim(per_map))
  result = {}
  lpips_weights = config.eval.lpips_weights
  if lpips_weights:  # At the generated size; higher: more diverse.
    metric = lpips.load_lpips(lpips_weights)
    result['diversity_lpips'] = float(np.mean(
        [metric.mean_pairwise_lpips(per_map) for per_map in images]))
  return {
      **result,
      'diversity_ms_ssim': float(np.mean(values)),
      'diversity_num_maps': int(num_maps),
      'diversity_num_samples': int(num_samples),
      'diversity_ms_ssim_input': (
          f'nearest-neighbour upsampling {hw[0]}x{hw[1]} -> '
          f'{size[0]}x{size[1]} (MS-SSIM needs >= {MS_SSIM_MIN_SIDE} px)'
          if size != hw else f'{hw[0]}x{hw[1]} (generated size)'),
  }
