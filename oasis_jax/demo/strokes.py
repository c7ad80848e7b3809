"""The strokes painted on a gradio ImageEditor, as class ids or a mask."""

from typing import Any, Optional

import numpy as np
from PIL import Image

from oasis_jax.demo import adapter

STROKE_ALPHA = 128  # Painted pixels: alpha at least this (of 255).
# Painted colours within this distance (max over R, G, B) of a palette
# colour are that colour: the canvas blends stroke edges a little.
STROKE_TOLERANCE = 24


def _as_rgba(image: Any) -> Optional[np.ndarray]:
  """An editor layer (array, PIL image or path) -> uint8 [H, W, 4]."""
  if image is None:
    return None
  if isinstance(image, str):
    with Image.open(image) as img:
      return np.asarray(img.convert('RGBA'))
  if isinstance(image, Image.Image):
    return np.asarray(image.convert('RGBA'))
  image = np.asarray(image)
  if image.ndim == 2:
    image = np.stack([image] * 3, -1)
  if image.shape[-1] == 3:
    image = np.concatenate(
        [image, np.full(image.shape[:2] + (1,), 255, image.dtype)], -1)
  return image.astype(np.uint8)


def _fit(layer: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
  """A layer at the label map's size (nearest), [H, W, 4]."""
  if layer.shape[:2] == tuple(hw):
    return layer
  return np.asarray(Image.fromarray(layer).resize((hw[1], hw[0]),
                                                  Image.NEAREST))


def stroke_layers(editor_value: Optional[dict[str, Any]],
                  hw: tuple[int, int]) -> list[np.ndarray]:
  """The painted layers of an ImageEditor value: uint8 [H, W, 4] each."""
  if not editor_value:
    return []
  layers = [_as_rgba(x) for x in editor_value.get('layers') or []]
  return [_fit(x, hw) for x in layers if x is not None]


def painted_mask(editor_value: Optional[dict[str, Any]],
                 hw: tuple[int, int]) -> np.ndarray:
  """Where any layer of an ImageEditor value was painted: bool [H, W]."""
  mask = np.zeros(hw, bool)
  for layer in stroke_layers(editor_value, hw):
    mask |= layer[..., 3] >= STROKE_ALPHA
  return mask


def apply_strokes(label: np.ndarray, editor_value: Optional[dict[str, Any]],
                  palette: np.ndarray) -> np.ndarray:
  """The label map with the painted strokes of an ImageEditor value.

  A painted pixel (alpha >= STROKE_ALPHA) gets the id of the palette colour
  within STROKE_TOLERANCE of its colour (the first id of a shared colour);
  later layers paint over earlier ones.

  Args:
    label: [H, W] class ids under the strokes.
    editor_value: {'background', 'layers': [[H, W, 4] RGBA], 'composite'}.
    palette: [C, 3] uint8.

  Returns:
    int32 [H, W].

  Raises:
    adapter.DemoError: painted colours that are no class's colour (listed).
  """
  label = np.array(label, np.int32)
  pal = palette.astype(np.int32)
  for layer in stroke_layers(editor_value, label.shape):
    painted = layer[..., 3] >= STROKE_ALPHA
    if not painted.any():
      continue
    colours = layer[painted][:, :3].astype(np.int32)  # [P, 3]
    dist = np.abs(colours[:, None, :] - pal[None, :, :]).max(-1)  # [P, C]
    ids = np.argmin(dist, axis=1)  # argmin: the first of equal colours.
    unknown = dist[np.arange(len(ids)), ids] > STROKE_TOLERANCE
    if unknown.any():
      bad, counts = np.unique(colours[unknown], axis=0, return_counts=True)
      order = np.argsort(-counts)[:5]
      listed = ', '.join(f'rgb{tuple(bad[i].tolist())}: {counts[i]} px'
                         for i in order)
      raise adapter.DemoError(
          f'Painted colours that are no class of the model: {listed}. Paint '
          'with the class colours of the brush.')
    label[painted] = ids
  return label
