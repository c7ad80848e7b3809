"""The gradio page: its widgets, their events, its CSS and JS, launch."""

import os
import types
from typing import Optional

import numpy as np

from oasis_jax.demo import adapter
from oasis_jax.demo import app

try:
  import gradio as gr  # pylint: disable=g-import-not-at-top
except ImportError:  # The optional `demo` extra.
  gr = None

_CSS = """
.oasis-pixels img, .oasis-pixels canvas { image-rendering: pixelated; }
#label_image img, #interp_image img {
  width: 100%; height: 100%; object-fit: contain; }
"""


_PICK_BRUSH_JS = """() => {
  const b = document.querySelector('#label_editor button[aria-label="Brush"]');
  if (b) { b.click(); }
}"""

_PIXELS = ['oasis-pixels']  # Shown pixel by pixel (see _CSS).


def _require_gradio() -> None:
  if gr is None:
    raise ImportError('The demo needs gradio: pip install -e ".[demo]" (or '
                      'pip install gradio).')


def _label_brush(demo: app.Demo, name: str) -> 'gr.Brush':
  """The label editor's brush, painting the colour of class `name`."""
  return gr.Brush(colors=demo.brush_colours(),
                  default_color=demo.class_colour(name), color_mode='fixed',
                  default_size=max(1, demo.model.image_hw[1] // 16))


def _label_column(demo: app.Demo, first: np.ndarray) -> dict[str, object]:
  """The label map's widgets: examples, upload, brush, editor, generate."""
  h, w = demo.model.image_hw
  names = demo.class_names
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
      layers=False, elem_id='label_editor', elem_classes=_PIXELS,
      brush=_label_brush(demo, names[min(1, len(names) - 1)]))
  gr.HTML(demo.legend_html())
  with gr.Row():
    num_samples = gr.Slider(1, app.MAX_SAMPLES, value=4, step=1,
                            label='Samples', elem_id='num_samples')
    seed = gr.Number(0, label='Seed', precision=0, elem_id='seed')
    random_seed = gr.Checkbox(False, label='New random seed each time',
                              elem_id='random_seed')
  generate_btn = gr.Button('Generate', variant='primary',
                           elem_id='generate')
  return dict(example=example, upload=upload, brush_class=brush_class,
              editor=editor, num_samples=num_samples, seed=seed,
              random_seed=random_seed, generate_btn=generate_btn)


def _samples_column() -> dict[str, object]:
  """The outputs: the coloured label map, the samples, the downloads."""
  colour_label = gr.Image(label='Label map', format='png', height=160,
                          interactive=False, elem_id='label_image',
                          elem_classes=_PIXELS)
  gallery = gr.Gallery(label='Samples', format='png', columns=4,
                       elem_id='samples', elem_classes=_PIXELS,
                       interactive=False)
  downloads = gr.File(label='Download', file_count='multiple',
                      interactive=False, elem_id='downloads')
  return dict(colour_label=colour_label, gallery=gallery, downloads=downloads)


def _region_column(demo: app.Demo, first: np.ndarray) -> dict[str, object]:
  """Local editing: the region (painted or by class) and its seed."""
  h, w = demo.model.image_hw
  gr.Markdown('### Resample a region (local editing)')
  region_mode = gr.Radio([('painted mask', 'mask'),
                          ('classes', 'classes')], value='classes',
                         label='Region', elem_id='region_mode')
  region_classes = gr.CheckboxGroup(demo.class_names, label='Classes',
                                    elem_id='region_classes')
  mask_editor = gr.ImageEditor(
      value=demo.editor_value(first),
      label='Region mask (paint over the region)', image_mode='RGBA',
      type='numpy', format='png', sources=(), canvas_size=(w, h),
      fixed_canvas=True, transforms=(), layers=False,
      elem_id='mask_editor', elem_classes=_PIXELS,
      brush=gr.Brush(colors=['#ffffff'], color_mode='fixed',
                     default_size=max(1, w // 12)))
  edit_seed = gr.Number(1, label='Edit seed', precision=0,
                        elem_id='edit_seed')
  resample_btn = gr.Button('Resample region', elem_id='resample')
  return dict(region_mode=region_mode, region_classes=region_classes,
              mask_editor=mask_editor, edit_seed=edit_seed,
              resample_btn=resample_btn)


def _interpolation_column() -> dict[str, object]:
  """Two sample numbers, a position slider and the interpolated image."""
  gr.Markdown('### Interpolate between two samples')
  with gr.Row():
    sample_a = gr.Number(1, label='From sample', precision=0,
                         elem_id='sample_a')
    sample_b = gr.Number(2, label='To sample', precision=0,
                         elem_id='sample_b')
  t = gr.Slider(0.0, 1.0, value=0.5, step=1 / (app.INTERPOLATION_STEPS - 1),
                label='Position', elem_id='interp_t')
  interp_image = gr.Image(label='Interpolated', format='png',
                          interactive=False, elem_id='interp_image',
                          elem_classes=_PIXELS)
  return dict(sample_a=sample_a, sample_b=sample_b, t=t,
              interp_image=interp_image)


def _warn(e: adapter.DemoError) -> str:
  """Shows `e` as a toast; returns it for the status line."""
  gr.Warning(str(e))
  return f'**Error:** {e}'


class _Handlers:
  """The event handlers: DemoError -> a message, the rest unchanged."""

  def __init__(self, demo: app.Demo):
    self.demo = demo

  def _set_label(self, label, what):
    v = self.demo.editor_value(label)
    return label, v, v, (f'Loaded {what} ({label.shape[0]}x'
                         f'{label.shape[1]}, classes '
                         f'{np.unique(label).tolist()}).')

  def on_example(self, name):
    if not name:
      return gr.skip(), gr.skip(), gr.skip(), ''
    try:
      return self._set_label(self.demo.load_example(name),
                             f'the example {name}')
    except adapter.DemoError as e:
      return gr.skip(), gr.skip(), gr.skip(), _warn(e)

  def on_upload(self, path):  # (The upload box is emptied for the next one.)
    if not path:
      return gr.skip(), gr.skip(), gr.skip(), '', None
    try:
      return self._set_label(self.demo.load_upload(path),
                             f'{os.path.basename(path)}') + (None,)
    except adapter.DemoError as e:
      return gr.skip(), gr.skip(), gr.skip(), _warn(e), None

  def on_brush(self, name):
    return gr.update(brush=_label_brush(self.demo, name))

  def _show(self, samples, message):
    images = [(img, f'sample {k + 1}')
              for k, img in enumerate(samples.images)]
    return (samples, self.demo.model.colorize(samples.label), images,
            self.demo.save_downloads(samples), message)

  def on_generate(self, label, editor_value, num, seed_value, randomize):
    demo = self.demo
    try:
      painted = demo.painted_label(label, editor_value)
      if randomize or seed_value is None:
        seed_value = int(np.random.default_rng().integers(0, 2**31 - 1))
      samples = demo.generate(painted, num, seed_value)
    except adapter.DemoError as e:
      return (gr.skip(),) * 4 + (_warn(e),) + (gr.skip(),) * 4
    v = demo.editor_value(painted)  # The strokes become the label map.
    return self._show(samples, f'Generated {len(samples.images)} sample(s) '
                      f'with seed {samples.seed}.') + (samples.seed, painted,
                                                       v, v)

  def on_resample(self, samples, mode, mask_value, classes, seed_value):
    try:
      if samples is None:
        raise adapter.DemoError('Generate images first.')
      mask = self.demo.region(samples, mode, mask_value, classes)
      seed_value = 1 if seed_value is None else int(seed_value)
      samples = self.demo.resample(samples, mask, seed_value)
    except adapter.DemoError as e:
      return (gr.skip(),) * 4 + (_warn(e), gr.skip())
    return self._show(samples, f'Resampled {int(mask.sum())} pixel(s) of '
                      f'every sample with edit seed {seed_value} (edit '
                      f'{samples.edits}).') + (seed_value + 1,)

  def on_interpolate(self, samples, a, b, position):
    try:
      return self.demo.interpolate(samples, a, b, position), ''
    except adapter.DemoError as e:
      return gr.skip(), _warn(e)


def _connect(ui: types.SimpleNamespace, handlers: _Handlers) -> None:
  """Wires the widgets' events to the handlers."""
  shown = [ui.samples_state, ui.colour_label, ui.gallery, ui.downloads,
           ui.status]
  ui.example.change(handlers.on_example, ui.example,
                    [ui.label_state, ui.editor, ui.mask_editor, ui.status])
  ui.upload.upload(handlers.on_upload, ui.upload,
                   [ui.label_state, ui.editor, ui.mask_editor, ui.status,
                    ui.upload])
  # A new brush takes effect once its tool is picked again: pick it.
  ui.brush_class.change(handlers.on_brush, ui.brush_class, ui.editor).then(
      None, None, None, js=_PICK_BRUSH_JS)
  ui.generate_btn.click(
      handlers.on_generate,
      [ui.label_state, ui.editor, ui.num_samples, ui.seed, ui.random_seed],
      shown + [ui.seed, ui.label_state, ui.editor, ui.mask_editor])
  ui.resample_btn.click(
      handlers.on_resample,
      [ui.samples_state, ui.region_mode, ui.mask_editor, ui.region_classes,
       ui.edit_seed],
      shown + [ui.edit_seed])
  interp_inputs = [ui.samples_state, ui.sample_a, ui.sample_b, ui.t]
  ui.t.release(handlers.on_interpolate, interp_inputs,
               [ui.interp_image, ui.status])
  for number in (ui.sample_a, ui.sample_b):
    number.submit(handlers.on_interpolate, interp_inputs,
                  [ui.interp_image, ui.status])


def build_app(synth_or_demo, *, title: str = 'OASIS demo',
              examples: Optional[dict[str, np.ndarray]] = None):
  """The gradio page over a Synthesizer (or a ready `Demo`).

  Args:
    synth_or_demo: an `synthesis.Synthesizer` or an `app.Demo`.
    title: the page title.
    examples: example label maps (default: the bundled ones).

  Returns:
    A `gradio.Blocks`; start it with `launch`.
  """
  _require_gradio()
  demo = synth_or_demo
  if not isinstance(demo, app.Demo):
    demo = app.Demo(adapter.ModelAdapter(synth_or_demo), examples)
  first = demo.first_label()
  with gr.Blocks(title=title, analytics_enabled=False) as page:
    widgets = dict(label_state=gr.State(first), samples_state=gr.State(None))
    gr.Markdown(f'## {title}\n{demo.model.description}. Start from an '
                'example, upload a label PNG (class ids or the palette\'s '
                'colours) or paint with the class colours; then generate, '
                'resample a region, interpolate.')
    widgets['status'] = gr.Markdown('', elem_id='status')
    with gr.Row():
      with gr.Column():
        widgets.update(_label_column(demo, first))
      with gr.Column():
        widgets.update(_samples_column())
    with gr.Row():
      with gr.Column():
        widgets.update(_region_column(demo, first))
      with gr.Column():
        widgets.update(_interpolation_column())
    _connect(types.SimpleNamespace(**widgets), _Handlers(demo))
  return page


def launch(synth_or_app, **kwargs):
  """Starts the page (inline in a notebook); kwargs go to Blocks.launch.

  Args:
    synth_or_app: a Synthesizer, an `app.Demo`, or a page of `build_app`.
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
