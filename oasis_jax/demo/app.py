"""The demo's state and callbacks: plain functions of arrays, no gradio."""

import dataclasses
import os
import tempfile
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image

from oasis_jax.demo import adapter
from oasis_jax.demo import labels
from oasis_jax.demo import strokes
from oasis_jax.runtime import logging_utils

MAX_SAMPLES = 8
INTERPOLATION_STEPS = 21  # Slider positions between two samples (0..1).


@dataclasses.dataclass
class Samples:
  """What the page shows: a label map, its samples and their noise.

  Attributes:
    label: int32 [H, W] class ids the samples were made from.
    z: float32 [N, H, W, z_dim] per-pixel noise of the samples.
    images: uint8 [N, H, W, 3].
    seed: the seed of the samples' noise.
    edits: local edits applied since (each changes z inside a region).
  """
  label: np.ndarray
  z: np.ndarray
  images: np.ndarray
  seed: int
  edits: int = 0


class Demo:
  """The demo's logic over one generator, shared by all browser sessions.

  Attributes:
    model: the ModelAdapter.
    examples: example name -> int32 [H, W] label map.
    class_names: 'id: name' per class id.
    out_dir: where downloads are written (a folder per call).
  """

  def __init__(self, model: adapter.ModelAdapter,
               examples: Optional[dict[str, np.ndarray]] = None,
               names: Optional[Sequence[str]] = None,
               out_dir: Optional[str] = None):
    self.model = model
    self.examples = (labels.bundled_examples(model) if examples is None
                     else dict(examples))
    self.class_names = list(names) if names is not None else labels.class_names(
        model.data_config, model.num_classes)
    if len(self.class_names) != model.num_classes:
      raise adapter.DemoError(f'{len(self.class_names)} class names for '
                              f'{model.num_classes} classes.')
    self.out_dir = out_dir or tempfile.mkdtemp(prefix='oasis_demo_')
    self._downloads = 0

  # ---- label maps ----------------------------------------------------------

  def blank_label(self, class_id: int = 0) -> np.ndarray:
    """A label map of one class: int32 [H, W]."""
    return np.full(self.model.image_hw, int(class_id), np.int32)

  def first_label(self) -> np.ndarray:
    """The label map the page starts with (the first example)."""
    if self.examples:
      return next(iter(self.examples.values()))
    return self.blank_label()

  def load_example(self, name: str) -> np.ndarray:
    """The example label map `name`: int32 [H, W]."""
    if name not in self.examples:
      raise adapter.DemoError(f'No example {name!r}; examples: '
                              f'{sorted(self.examples)}.')
    return self.examples[name].copy()

  def load_upload(self, path: Optional[str]) -> np.ndarray:
    """An uploaded label PNG -> int32 [H, W] of the model's size."""
    if not path:
      raise adapter.DemoError('No file uploaded.')
    try:
      return self.model.read_label_file(path)
    except adapter.DemoError as e:  # Named as the user knows it, not its copy.
      raise adapter.DemoError(
          str(e).replace(path, os.path.basename(path))) from None

  def class_id(self, name: str) -> int:
    """The id of a class name of `class_names` ('id: name')."""
    if name not in self.class_names:
      raise adapter.DemoError(f'Unknown class {name!r}.')
    return self.class_names.index(name)

  def class_colour(self, name: str) -> str:
    """The palette colour of a class as '#rrggbb'."""
    return _hex(self.model.palette[self.class_id(name)])

  def brush_colours(self) -> list[str]:
    """The distinct palette colours, in id order, as '#rrggbb'."""
    return list(dict.fromkeys(_hex(c) for c in self.model.palette))

  def editor_value(self, label: np.ndarray) -> dict[str, Any]:
    """An ImageEditor value: the colourised label map, no strokes."""
    colour = self.model.colorize(label)
    return {'background': colour, 'layers': [], 'composite': colour}

  def legend_html(self) -> str:
    """The classes and their colours, as HTML."""
    items = ''.join(
        f'<span style="display:inline-block;margin:2px 8px 2px 0">'
        f'<span style="display:inline-block;width:12px;height:12px;'
        f'background:{_hex(c)};border:1px solid #888;vertical-align:middle">'
        f'</span> {name}</span>'
        for name, c in zip(self.class_names, self.model.palette))
    return f'<div>{items}</div>'

  def painted_label(self, label: np.ndarray,
                    editor_value: Optional[dict[str, Any]]) -> np.ndarray:
    """`label` with the strokes of the label editor: int32 [H, W]."""
    label = self.model.check_label(np.asarray(label), 'the label map')
    return strokes.apply_strokes(label, editor_value, self.model.palette)

  # ---- images ----------------------------------------------------------------

  def generate(self, label: np.ndarray, num_samples: int,
               seed: int) -> Samples:
    """`num_samples` images of `label` ([H, W] ids) from `seed`."""
    num = int(num_samples)
    if not 1 <= num <= MAX_SAMPLES:
      raise adapter.DemoError(
          f'Number of samples {num}; 1 to {MAX_SAMPLES}.')
    label = self.model.check_label(np.asarray(label), 'the label map')
    seed = int(seed)
    z = self.model.noise(seed, num)
    return Samples(label, z, self.model.render(label, z), seed)

  def region(self, samples: Samples, mode: str,
             mask_value: Optional[dict[str, Any]] = None,
             classes: Sequence[str] = ()) -> np.ndarray:
    """The region to resample: bool [H, W].

    Args:
      samples: the current samples.
      mode: 'mask' (painted on the region editor) or 'classes'.
      mask_value: the region editor's value (mode 'mask').
      classes: class names (mode 'classes').
    """
    hw = samples.label.shape
    if mode == 'mask':
      mask = strokes.painted_mask(mask_value, hw)
      if not mask.any():
        raise adapter.DemoError('Paint the region to resample on the region '
                                'canvas first (or choose classes).')
      return mask
    if mode != 'classes':
      raise adapter.DemoError(f"Region mode {mode!r}; 'mask' or 'classes'.")
    if not classes:
      raise adapter.DemoError(
          'Choose at least one class whose region to resample.')
    ids = [self.class_id(c) for c in classes]
    mask = np.isin(samples.label, ids)
    if not mask.any():
      raise adapter.DemoError(
          f'The label map has no pixels of {list(classes)}.')
    return mask

  def resample(self, samples: Optional[Samples], mask: np.ndarray,
               seed: int) -> Samples:
    """New noise inside `mask` ([H, W] bool), the rest of the images kept."""
    if samples is None:
      raise adapter.DemoError('Generate images first.')
    images, z = self.model.resample(samples.label, samples.z, mask, int(seed))
    return dataclasses.replace(samples, z=z, images=images,
                               edits=samples.edits + 1)

  def interpolate(self, samples: Optional[Samples], a: int, b: int,
                  t: float) -> np.ndarray:
    """The image at `t` in [0, 1] from sample a to sample b (1-based).

    Returns:
      uint8 [H, W, 3].
    """
    if samples is None:
      raise adapter.DemoError('Generate images first.')
    n = len(samples.z)
    a, b = int(a), int(b)
    if not (1 <= a <= n and 1 <= b <= n):
      raise adapter.DemoError(f'Samples {a} and {b}: choose from 1 to {n}.')
    t = min(max(float(t), 0.0), 1.0)
    path = self.model.noise_path(samples.z[a - 1], samples.z[b - 1],
                                 INTERPOLATION_STEPS)
    z = path[int(round(t * (INTERPOLATION_STEPS - 1)))][None]
    return self.model.render(samples.label, z)[0]

  def save_downloads(self, samples: Samples) -> list[str]:
    """Writes the label map (ids and colours) and the samples as PNGs.

    Returns:
      The file paths, in a new folder under out_dir.
    """
    self._downloads += 1
    folder = os.path.join(self.out_dir, f'{self._downloads:04d}')
    os.makedirs(folder, exist_ok=True)
    stem = f'seed{samples.seed}' + (f'_edit{samples.edits}'
                                    if samples.edits else '')
    files = []
    ids = samples.label
    mode = 'L' if ids.max(initial=0) < 256 else 'I;16'
    path = os.path.join(folder, 'label_ids.png')
    Image.fromarray(ids.astype(np.uint8 if mode == 'L' else np.uint16)).save(
        path)
    files.append(path)
    path = os.path.join(folder, 'label_colours.png')
    logging_utils.save_png(path, self.model.colorize(ids))
    files.append(path)
    for k, image in enumerate(samples.images):
      path = os.path.join(folder, f'{stem}_sample{k + 1}.png')
      logging_utils.save_png(path, image)
      files.append(path)
    return files


def _hex(colour) -> str:
  r, g, b = (int(c) for c in colour)
  return f'#{r:02x}{g:02x}{b:02x}'
