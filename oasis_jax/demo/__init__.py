"""An interactive demo: paint a label map, get images, resample one region.

  python -m oasis_jax.demo (--checkpoint=DIR | --workdir=DIR [--step=best])
      [--port=N] [--host=ADDRESS] [--share] [--class_names=FILE]

A gradio page (`pip install -e ".[demo]"`) over a trained generator:

  1. a label map: a bundled example (oasis_jax/examples, or the data set's
     validation maps with --workdir), an uploaded label PNG (class ids or
     the model's palette colours), then painted over with a brush whose
     colour is picked by class name, on a canvas of the model's size;
  2. N samples of it (the seed is shown and can be set), beside the label
     map in the palette's colours;
  3. local editing (the paper's Sec. 3.4): new noise inside a region, a
     painted mask or the pixels of chosen classes, the old noise elsewhere;
  4. a slider between two samples (spherical interpolation of their noise);
  5. the images as PNG files to download.

From Python (a notebook cell; inline on Colab and Jupyter):

  from oasis_jax import demo
  demo.launch(synth)                 # synth: an synthesis.Synthesizer

The callbacks are the methods of `Demo`: plain functions of numpy arrays
and strings, tested without a browser. Everything the demo asks of the
generator goes through `ModelAdapter`, the one place that calls
`inference` and the label reader.
"""

import dataclasses
import os
import sys
import tempfile
from typing import Any, Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np
from PIL import Image

import data_pipelines
from data_pipelines import transforms
from oasis_jax import generate as generate_lib
from oasis_jax.inference import synthesis
from oasis_jax.runtime import logging_utils
from oasis_jax.inference import noise as noise_lib

try:
  import gradio as gr  # pylint: disable=g-import-not-at-top
except ImportError:  # The optional `demo` extra.
  gr = None

EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            'examples')
MAX_SAMPLES = 8
NUM_VALIDATION_EXAMPLES = 6  # Validation label maps offered with --workdir.
INTERPOLATION_STEPS = 21  # Slider positions between two samples (0..1).
STROKE_ALPHA = 128  # Painted pixels: alpha at least this (of 255).
# Painted colours within this distance (max over R, G, B) of a palette
# colour are that colour: the canvas blends stroke edges a little.
STROKE_TOLERANCE = 24

# Names of the class ids of the data sets that have them; others are named
# by their id. (Cityscapes: the labelIds of cityscapesScripts, as
# palette_data.CITYSCAPES colours them.)
CLASS_NAMES = {
    'cityscapes': (
        'unlabeled', 'ego vehicle', 'rectification border', 'out of roi',
        'static', 'dynamic', 'ground', 'road', 'sidewalk', 'parking',
        'rail track', 'building', 'wall', 'fence', 'guard rail', 'bridge',
        'tunnel', 'pole', 'polegroup', 'traffic light', 'traffic sign',
        'vegetation', 'terrain', 'sky', 'person', 'rider', 'car', 'truck',
        'bus', 'caravan', 'trailer', 'train', 'motorcycle', 'bicycle',
        'license plate'),
}

_CSS = """
.oasis-pixels img, .oasis-pixels canvas { image-rendering: pixelated; }
#label_image img, #interp_image img {
  width: 100%; height: 100%; object-fit: contain; }
"""


_PICK_BRUSH_JS = """() => {
  const b = document.querySelector('#label_editor button[aria-label="Brush"]');
  if (b) { b.click(); }
}"""


class DemoError(ValueError):
  """Input the demo cannot use; the message is shown on the page."""


# --------------------------------------------------------------------------
# Adapter: every call of the demo into synthesis.py and the label reader.


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


# --------------------------------------------------------------------------
# Label maps: examples, names, the painted canvas.


def class_names(data_config, num_classes: int,
                names_file: Optional[str] = None) -> list[str]:
  """'id: name' for every class id (names from a file, the data set, or ids).

  Args:
    data_config: `config.data` (its name picks a table of CLASS_NAMES).
    num_classes: how many ids.
    names_file: optional text file, one name per line, in id order.

  Returns:
    num_classes strings.
  """
  names = CLASS_NAMES.get(data_config.name, ())
  if names_file:
    with open(names_file) as f:
      names = [line.strip() for line in f if line.strip()]
  dontcare = int(data_config.dontcare_id)
  out = []
  for i in range(num_classes):
    if i < len(names):
      out.append(f'{i}: {names[i]}')
    else:
      out.append(f'{i}: unlabeled' if i == dontcare else f'{i}: class {i}')
  return out


def bundled_examples(model: ModelAdapter,
                     directory: str = EXAMPLES_DIR) -> dict[str, np.ndarray]:
  """The example label maps that fit the model, by file stem.

  Examples with class ids the model lacks are left out (logged).
  """
  examples = {}
  if not os.path.isdir(directory):
    logging.warning('No example label maps: %s is missing.', directory)
    return examples
  for name in sorted(os.listdir(directory)):
    if not name.endswith('.png'):
      continue
    try:
      examples[os.path.splitext(name)[0]] = model.read_label_file(
          os.path.join(directory, name))
    except DemoError as e:
      logging.warning('Example left out: %s', e)
  return examples


def validation_examples(model: ModelAdapter,
                        num: int = NUM_VALIDATION_EXAMPLES
                        ) -> dict[str, np.ndarray]:
  """The first `num` validation label maps of the model's data set.

  Empty (logged) when the data set cannot be read here.
  """
  try:
    source = data_pipelines.make_source(model.data_config, 'val',
                                        allow_build=False)
    count = min(num, len(source))
    return {f'validation {i}': transforms.resize_label(
        source[i]['label'], model.image_hw) for i in range(count)}
  except (data_pipelines.DataError, OSError) as e:
    logging.warning('No validation label maps: %s', e)
    return {}


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
    DemoError: painted colours that are no class's colour (listed).
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
      raise DemoError(f'Painted colours that are no class of the model: '
                      f'{listed}. Paint with the class colours of the brush.')
    label[painted] = ids
  return label


# --------------------------------------------------------------------------
# The demo's state and callbacks (plain functions, no gradio).


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

  def __init__(self, model: ModelAdapter,
               examples: Optional[dict[str, np.ndarray]] = None,
               names: Optional[Sequence[str]] = None,
               out_dir: Optional[str] = None):
    self.model = model
    self.examples = (bundled_examples(model) if examples is None
                     else dict(examples))
    self.class_names = list(names) if names is not None else class_names(
        model.data_config, model.num_classes)
    if len(self.class_names) != model.num_classes:
      raise DemoError(f'{len(self.class_names)} class names for '
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
      raise DemoError(f'No example {name!r}; examples: '
                      f'{sorted(self.examples)}.')
    return self.examples[name].copy()

  def load_upload(self, path: Optional[str]) -> np.ndarray:
    """An uploaded label PNG -> int32 [H, W] of the model's size."""
    if not path:
      raise DemoError('No file uploaded.')
    try:
      return self.model.read_label_file(path)
    except DemoError as e:  # Named as the user knows it, not by its copy.
      raise DemoError(str(e).replace(path, os.path.basename(path))) from None

  def class_id(self, name: str) -> int:
    """The id of a class name of `class_names` ('id: name')."""
    if name not in self.class_names:
      raise DemoError(f'Unknown class {name!r}.')
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
    return apply_strokes(label, editor_value, self.model.palette)

  # ---- images ----------------------------------------------------------------

  def generate(self, label: np.ndarray, num_samples: int,
               seed: int) -> Samples:
    """`num_samples` images of `label` ([H, W] ids) from `seed`."""
    num = int(num_samples)
    if not 1 <= num <= MAX_SAMPLES:
      raise DemoError(f'Number of samples {num}; 1 to {MAX_SAMPLES}.')
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
      mask = painted_mask(mask_value, hw)
      if not mask.any():
        raise DemoError('Paint the region to resample on the region canvas '
                        'first (or choose classes).')
      return mask
    if mode != 'classes':
      raise DemoError(f"Region mode {mode!r}; 'mask' or 'classes'.")
    if not classes:
      raise DemoError('Choose at least one class whose region to resample.')
    ids = [self.class_id(c) for c in classes]
    mask = np.isin(samples.label, ids)
    if not mask.any():
      raise DemoError(f'The label map has no pixels of {list(classes)}.')
    return mask

  def resample(self, samples: Optional[Samples], mask: np.ndarray,
               seed: int) -> Samples:
    """New noise inside `mask` ([H, W] bool), the rest of the images kept."""
    if samples is None:
      raise DemoError('Generate images first.')
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
      raise DemoError('Generate images first.')
    n = len(samples.z)
    a, b = int(a), int(b)
    if not (1 <= a <= n and 1 <= b <= n):
      raise DemoError(f'Samples {a} and {b}: choose from 1 to {n}.')
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


# --------------------------------------------------------------------------
# The gradio page.


def _require_gradio() -> None:
  if gr is None:
    raise ImportError('The demo needs gradio: pip install -e ".[demo]" (or '
                      'pip install gradio).')


def build_app(synth_or_demo, *, title: str = 'OASIS demo',
              examples: Optional[dict[str, np.ndarray]] = None):
  """The gradio page over a Synthesizer (or a ready `Demo`).

  Args:
    synth_or_demo: an `synthesis.Synthesizer` or a `Demo`.
    title: the page title.
    examples: example label maps (default: the bundled ones).

  Returns:
    A `gradio.Blocks`; start it with `launch`.
  """
  _require_gradio()
  demo = synth_or_demo
  if not isinstance(demo, Demo):
    demo = Demo(ModelAdapter(synth_or_demo), examples)
  model = demo.model
  h, w = model.image_hw
  names = demo.class_names
  first = demo.first_label()
  pixels = ['oasis-pixels']

  def warn(e: DemoError) -> str:
    gr.Warning(str(e))
    return f'**Error:** {e}'

  with gr.Blocks(title=title, analytics_enabled=False) as page:
    label_state = gr.State(first)
    samples_state = gr.State(None)
    gr.Markdown(f'## {title}\n{model.description}. Start from an example, '
                'upload a label PNG (class ids or the palette\'s colours) or '
                'paint with the class colours; then generate, resample a '
                'region, interpolate.')
    status = gr.Markdown('', elem_id='status')
    with gr.Row():
      with gr.Column():
        with gr.Row():
          example = gr.Dropdown(list(demo.examples), label='Example',
                                value=next(iter(demo.examples), None),
                                elem_id='example')
          upload = gr.File(label='Upload a label PNG', file_types=['.png'],
                           type='filepath', elem_id='label_upload')
        brush_class = gr.Dropdown(names, label='Brush class',
                                  value=names[min(1, len(names) - 1)],
                                  elem_id='brush_class')
        editor = gr.ImageEditor(
            value=demo.editor_value(first), label='Label map (paint here)',
            image_mode='RGBA', type='numpy', format='png', sources=(),
            canvas_size=(w, h), fixed_canvas=True, transforms=(),
            layers=False, elem_id='label_editor', elem_classes=pixels,
            brush=gr.Brush(colors=demo.brush_colours(),
                           default_color=demo.class_colour(
                               names[min(1, len(names) - 1)]),
                           color_mode='fixed', default_size=max(1, w // 16)))
        gr.HTML(demo.legend_html())
        with gr.Row():
          num_samples = gr.Slider(1, MAX_SAMPLES, value=4, step=1,
                                  label='Samples', elem_id='num_samples')
          seed = gr.Number(0, label='Seed', precision=0, elem_id='seed')
          random_seed = gr.Checkbox(False, label='New random seed each time',
                                    elem_id='random_seed')
        generate_btn = gr.Button('Generate', variant='primary',
                                 elem_id='generate')
      with gr.Column():
        colour_label = gr.Image(label='Label map', format='png', height=160,
                                interactive=False, elem_id='label_image',
                                elem_classes=pixels)
        gallery = gr.Gallery(label='Samples', format='png', columns=4,
                             elem_id='samples', elem_classes=pixels,
                             interactive=False)
        downloads = gr.File(label='Download', file_count='multiple',
                            interactive=False, elem_id='downloads')
    with gr.Row():
      with gr.Column():
        gr.Markdown('### Resample a region (local editing)')
        region_mode = gr.Radio([('painted mask', 'mask'),
                                ('classes', 'classes')], value='classes',
                               label='Region', elem_id='region_mode')
        region_classes = gr.CheckboxGroup(names, label='Classes',
                                          elem_id='region_classes')
        mask_editor = gr.ImageEditor(
            value=demo.editor_value(first),
            label='Region mask (paint over the region)', image_mode='RGBA',
            type='numpy', format='png', sources=(), canvas_size=(w, h),
            fixed_canvas=True, transforms=(), layers=False,
            elem_id='mask_editor', elem_classes=pixels,
            brush=gr.Brush(colors=['#ffffff'], color_mode='fixed',
                           default_size=max(1, w // 12)))
        edit_seed = gr.Number(1, label='Edit seed', precision=0,
                              elem_id='edit_seed')
        resample_btn = gr.Button('Resample region', elem_id='resample')
      with gr.Column():
        gr.Markdown('### Interpolate between two samples')
        with gr.Row():
          sample_a = gr.Number(1, label='From sample', precision=0,
                               elem_id='sample_a')
          sample_b = gr.Number(2, label='To sample', precision=0,
                               elem_id='sample_b')
        t = gr.Slider(0.0, 1.0, value=0.5, step=1 / (INTERPOLATION_STEPS - 1),
                      label='Position', elem_id='interp_t')
        interp_image = gr.Image(label='Interpolated', format='png',
                                interactive=False, elem_id='interp_image',
                                elem_classes=pixels)

    # ---- event handlers: DemoError -> a message, the rest unchanged.

    def set_label(label, what):
      v = demo.editor_value(label)
      return label, v, v, (f'Loaded {what} ({label.shape[0]}x'
                           f'{label.shape[1]}, classes '
                           f'{np.unique(label).tolist()}).')

    def on_example(name):
      if not name:
        return gr.skip(), gr.skip(), gr.skip(), ''
      try:
        return set_label(demo.load_example(name), f'the example {name}')
      except DemoError as e:
        return gr.skip(), gr.skip(), gr.skip(), warn(e)

    def on_upload(path):  # (The upload box is emptied for the next one.)
      if not path:
        return gr.skip(), gr.skip(), gr.skip(), '', None
      try:
        return set_label(demo.load_upload(path),
                         f'{os.path.basename(path)}') + (None,)
      except DemoError as e:
        return gr.skip(), gr.skip(), gr.skip(), warn(e), None

    def on_brush(name):
      colour = demo.class_colour(name)
      return gr.update(brush=gr.Brush(
          colors=demo.brush_colours(), default_color=colour,
          color_mode='fixed', default_size=max(1, w // 16)))

    def show(samples, message):
      images = [(img, f'sample {k + 1}')
                for k, img in enumerate(samples.images)]
      return (samples, model.colorize(samples.label), images,
              demo.save_downloads(samples), message)

    def on_generate(label, editor_value, num, seed_value, randomize):
      try:
        painted = demo.painted_label(label, editor_value)
        if randomize or seed_value is None:
          seed_value = int(np.random.default_rng().integers(0, 2**31 - 1))
        samples = demo.generate(painted, num, seed_value)
      except DemoError as e:
        return (gr.skip(),) * 4 + (warn(e),) + (gr.skip(),) * 4
      v = demo.editor_value(painted)  # The strokes become the label map.
      return show(samples, f'Generated {len(samples.images)} sample(s) with '
                  f'seed {samples.seed}.') + (samples.seed, painted, v, v)

    def on_resample(samples, mode, mask_value, classes, seed_value):
      try:
        if samples is None:
          raise DemoError('Generate images first.')
        mask = demo.region(samples, mode, mask_value, classes)
        seed_value = 1 if seed_value is None else int(seed_value)
        samples = demo.resample(samples, mask, seed_value)
      except DemoError as e:
        return (gr.skip(),) * 4 + (warn(e), gr.skip())
      return show(samples, f'Resampled {int(mask.sum())} pixel(s) of every '
                  f'sample with edit seed {seed_value} (edit '
                  f'{samples.edits}).') + (seed_value + 1,)

    def on_interpolate(samples, a, b, position):
      try:
        return demo.interpolate(samples, a, b, position), ''
      except DemoError as e:
        return gr.skip(), warn(e)

    shown = [samples_state, colour_label, gallery, downloads, status]
    example.change(on_example, example,
                   [label_state, editor, mask_editor, status])
    upload.upload(on_upload, upload,
                  [label_state, editor, mask_editor, status, upload])
    # A new brush takes effect once its tool is picked again: pick it.
    brush_class.change(on_brush, brush_class, editor).then(
        None, None, None, js=_PICK_BRUSH_JS)
    generate_btn.click(
        on_generate, [label_state, editor, num_samples, seed, random_seed],
        shown + [seed, label_state, editor, mask_editor])
    resample_btn.click(
        on_resample,
        [samples_state, region_mode, mask_editor, region_classes, edit_seed],
        shown + [edit_seed])
    interp_inputs = [samples_state, sample_a, sample_b, t]
    t.release(on_interpolate, interp_inputs, [interp_image, status])
    for number in (sample_a, sample_b):
      number.submit(on_interpolate, interp_inputs, [interp_image, status])
  return page


def launch(synth_or_app, **kwargs):
  """Starts the page (inline in a notebook); kwargs go to Blocks.launch.

  Args:
    synth_or_app: a Synthesizer, a `Demo`, or a page of `build_app`.
    **kwargs: e.g. server_port, share, inline, prevent_thread_lock.

  Returns:
    What `gradio.Blocks.launch` returns.
  """
  _require_gradio()
  page = synth_or_app
  if not isinstance(page, gr.Blocks):
    page = build_app(synth_or_app)
  kwargs.setdefault('css', _CSS)
  return page.launch(**kwargs)


# --------------------------------------------------------------------------
# Command line.


def define_flags() -> None:
  """The command line flags (defined only when run as a program)."""
  flags.DEFINE_string(
      'checkpoint', None, 'An inference checkpoint (oasis_jax.export or '
      'oasis_jax.convert_torch).')
  flags.DEFINE_string('workdir', None, 'A training run folder.')
  flags.DEFINE_string('step', 'latest',
                      "--workdir only: 'latest', 'best' or a step.")
  flags.DEFINE_integer('port', 7860, 'The port of the page.')
  flags.DEFINE_string('host', '127.0.0.1',
                      'The address to serve on (0.0.0.0: every interface).')
  flags.DEFINE_bool('share', False,
                    'Also serve through a public gradio.live link.')
  flags.DEFINE_string('class_names', None,
                      'A text file of class names, one per line, in id '
                      'order.')


def main(argv: Sequence[str]) -> None:
  f = flags.FLAGS
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {list(argv[1:])}.')
  if (f.workdir is None) == (f.checkpoint is None):
    raise app.UsageError('Give exactly one of --workdir or --checkpoint.')
  if gr is None:
    sys.stderr.write('ERROR: the demo needs gradio: pip install -e '
                     '".[demo]".\n')
    sys.exit(1)
  logging_utils.quiet_library_logs()
  try:
    synth = load_synthesizer(f.checkpoint, f.workdir, f.step)
    model = ModelAdapter(synth)
    examples = validation_examples(model) if f.workdir else {}
    examples = examples or bundled_examples(model)
    names = class_names(model.data_config, model.num_classes, f.class_names)
    demo = Demo(model, examples, names)
  except (DemoError, FileNotFoundError, ValueError) as e:
    sys.stderr.write(f'ERROR: {e}\n')
    sys.exit(1)
  logging.info('%s', synth)
  launch(demo, server_name=f.host, server_port=f.port, share=f.share)

