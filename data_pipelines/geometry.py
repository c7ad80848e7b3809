"""Image geometry: the image height from its width and aspect ratio, the latent.

One rule, used by the data pipelines, the train state, the generator and
inference alike:

  H = the nearest integer to W / aspect_ratio, halves rounded up
      (256 px at aspect 1.5: 170.67 -> 171; 100 px at 8.0: 12.5 -> 13);
  latent (h, w) = (H, W) / 2**(num_res_blocks - 1), which must divide exactly:
      the generator upsamples its first feature map num_res_blocks - 1 times
      by 2, so any other size could not come out at (H, W).

For the official settings (ADE20K and COCO-Stuff 256x256, Cityscapes 256x512,
6 residual blocks) this is the official code's rule. This module is plain
Python (no JAX, no numpy), so Grain workers and data tools import it freely.
"""

import math


def image_height(width: int, aspect_ratio: float) -> int:
  """round(width / aspect_ratio), halves up; at least 1.

  Args:
    width: the image width in pixels.
    aspect_ratio: width / height (> 0).
  """
  aspect_ratio = float(aspect_ratio)
  if not aspect_ratio > 0:
    raise ValueError(f'aspect_ratio={aspect_ratio}: expected a positive '
                     'width / height ratio.')
  return max(1, int(math.floor(int(width) / aspect_ratio + 0.5)))


def image_hw(data_config) -> tuple[int, int]:
  """(H, W) of the network input of a data config (config.data).

  Args:
    data_config: has `image_size` (W, pixels) and `aspect_ratio` (W / H).

  Returns:
    (image_height(W, aspect_ratio), W).
  """
  width = int(data_config.image_size)
  return image_height(width, data_config.aspect_ratio), width


def load_hw(data_config) -> tuple[int, int]:
  """(H, W) of the training resize before the random crop (config.data).

  The same rule as `image_hw`, for `load_size` (W, pixels).
  """
  width = int(data_config.load_size)
  return image_height(width, data_config.aspect_ratio), width


def latent_hw(image_size: int, aspect_ratio: float,
              num_res_blocks: int) -> tuple[int, int]:
  """(h, w) of the generator's first feature map for images of that width.

  Args:
    image_size: the image width W in pixels.
    aspect_ratio: W / H.
    num_res_blocks: the generator's SPADE residual blocks (it upsamples by
      2**(num_res_blocks - 1)).

  Raises:
    ValueError: H or W is not a multiple of 2**(num_res_blocks - 1); the
      message names the sizes and the nearest width that works.
  """
  scale = 2**(int(num_res_blocks) - 1)
  width = int(image_size)
  height = image_height(width, aspect_ratio)
  if height % scale or width % scale:
    raise ValueError(
        f'image_size={width} with aspect_ratio={aspect_ratio} gives '
        f'{height}x{width} (HxW), which the generator ({num_res_blocks} '
        f'residual blocks, upsampling x{scale}) cannot produce: H and W must '
        f'be multiples of {scale}.')
  return height // scale, width // scale
