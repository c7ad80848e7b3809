"""Tests of the demo's callbacks (oasis_jax/demo/), without a browser."""

import functools
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import ml_collections
import numpy as np
from PIL import Image

from configs import tiny as tiny_lib
from configs import tiny64 as tiny64_lib
from oasis_jax.demo import adapter
from oasis_jax.demo import app
from oasis_jax.demo import labels
from oasis_jax.demo import layout
from oasis_jax.demo import strokes
from oasis_jax.inference import synthesis
from data_pipelines import palettes

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def demo_config():
  """tiny64 with a 32x32 latent: random weights then keep edits local."""
  config = tiny64_lib.get_config()
  config.generator.num_res_blocks = 2  # (At 4x4, an edit moves every pixel.)
  return config


@functools.lru_cache(maxsize=None)
def _synth(config_name: str = 'demo') -> synthesis.Synthesizer:
  config = {'demo': demo_config, 'tiny': tiny_lib.get_config}[config_name]()
  return synthesis.Synthesizer(
      config, synthesis.random_variables(config, seed=3), source='test')


def _label() -> np.ndarray:
  """64x64: class 3 above, class 4 below, a class 5 square, a 2 corner."""
  label = np.full((64, 64), 3, np.int32)
  label[40:] = 4
  label[8:40, 8:40] = 5
  label[:6, 56:] = 2
  return label


def _layer(hw, pixels, colour, alpha=255) -> np.ndarray:
  """An RGBA stroke layer with `colour` at `pixels` (a numpy index)."""
  layer = np.zeros(tuple(hw) + (4,), np.uint8)
  layer[pixels] = tuple(colour) + (alpha,)
  return layer


class DemoTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.synth = _synth()
    cls.model = adapter.ModelAdapter(cls.synth)
    cls.demo = app.Demo(cls.model, out_dir=tempfile.mkdtemp())
    cls.palette = cls.model.palette

  # ---- label maps ----------------------------------------------------------

  def test_strokes_become_class_ids_blended_edges_snap_faint_ones_ignored(
      self):
    label = _label()
    hw = label.shape
    c2 = self.palette[2].astype(int)
    strokes = _layer(hw, np.s_[50:54, 10:20], c2)
    strokes[50:54, 20] = tuple(np.clip(c2 + (10, -12, 5), 0, 255)) + (200,)
    strokes[50:54, 21] = (255, 255, 255, 40)  # Faint: not painted.
    value = {'background': None, 'layers': [strokes], 'composite': None}
    painted = self.demo.painted_label(label, value)
    expected = label.copy()
    expected[50:54, 10:21] = 2
    np.testing.assert_array_equal(painted, expected)
    self.assertEqual(painted.dtype, np.int32)
    # Later layers paint over earlier ones.
    over = _layer(hw, np.s_[50:52, 10:12], self.palette[1])
    painted = self.demo.painted_label(
        label, {'layers': [strokes, over]})
    self.assertEqual(painted[50, 10], 1)
    self.assertEqual(painted[53, 10], 2)

  def test_unknown_painted_colour_is_a_clear_error(self):
    strokes = _layer((64, 64), np.s_[0:3, 0:4], (1, 2, 250))
    with self.assertRaisesRegex(
        adapter.DemoError, r'no class of the model: rgb\(1, 2, 250\): 12 px'):
      self.demo.painted_label(_label(), {'layers': [strokes]})

  def test_strokes_of_another_canvas_size_are_resized(self):
    strokes = _layer((128, 128), np.s_[0:64, :], self.palette[1])
    painted = self.demo.painted_label(_label(), {'layers': [strokes]})
    self.assertTrue((painted[:32] == 1).all())
    np.testing.assert_array_equal(painted[32:], _label()[32:])

  def test_painted_mask_is_where_any_layer_is_opaque(self):
    a = _layer((64, 64), np.s_[0:2, 0:2], (255, 255, 255))
    b = _layer((64, 64), np.s_[10, 10:13], (255, 255, 255), alpha=127)
    c = _layer((64, 64), np.s_[20, 20], (255, 255, 255), alpha=128)
    mask = strokes.painted_mask({'layers': [a, b, c]}, (64, 64))
    self.assertEqual(mask.sum(), 5)
    self.assertTrue(mask[0, 0] and mask[20, 20] and not mask[10, 10])
    self.assertFalse(strokes.painted_mask(None, (64, 64)).any())

  def test_upload_reads_ids_and_palette_colours_alike(self):
    root = self.create_tempdir().full_path
    ids_path = os.path.join(root, 'ids.png')
    rgb_path = os.path.join(root, 'rgb.png')
    Image.fromarray(_label().astype(np.uint8)).save(ids_path)
    Image.fromarray(palettes.colorize(_label(), self.palette)).save(rgb_path)
    np.testing.assert_array_equal(self.demo.load_upload(ids_path), _label())
    np.testing.assert_array_equal(self.demo.load_upload(rgb_path), _label())
    # Half the size: resized (nearest) to the model's 64x64.
    small = os.path.join(root, 'small.png')
    Image.fromarray(_label()[::2, ::2].astype(np.uint8)).save(small)
    self.assertEqual(self.demo.load_upload(small).shape, (64, 64))

  def test_upload_with_unknown_colours_or_ids_names_them(self):
    root = self.create_tempdir().full_path
    rgb = palettes.colorize(_label(), self.palette)
    rgb[:2, :3] = (7, 200, 9)
    path = os.path.join(root, 'bad_colours.png')
    Image.fromarray(rgb).save(path)
    with self.assertRaisesRegex(
        adapter.DemoError,
        r'^bad_colours.png: 1 colour\(s\) not in the palette of the model: '
        r'\(7, 200, 9\): 6 px'):
      self.demo.load_upload(path)
    ids = _label().astype(np.uint8)
    ids[0, 0] = 9
    path = os.path.join(root, 'bad_ids.png')
    Image.fromarray(ids).save(path)
    with self.assertRaisesRegex(adapter.DemoError,
                                r'bad_ids.png: class ids outside \[0, 6\)'):
      self.demo.load_upload(path)
    with self.assertRaisesRegex(adapter.DemoError, 'No file uploaded'):
      self.demo.load_upload(None)

  def test_examples_the_model_cannot_take_are_left_out(self):
    # The bundled examples hold ids 0..5: all fit 6 classes, none fit 4.
    self.assertEqual(sorted(self.demo.examples),
                     ['landscape', 'room', 'street'])
    self.assertEqual(self.demo.load_example('room').shape, (64, 64))
    four = adapter.ModelAdapter(_synth('tiny'))
    self.assertEqual(labels.bundled_examples(four), {})
    self.assertEqual(app.Demo(four, out_dir='unused').first_label().shape,
                     (32, 32))
    with self.assertRaisesRegex(adapter.DemoError, "No example 'nope'"):
      self.demo.load_example('nope')

  def test_validation_examples_of_the_data_set_at_the_model_size(self):
    examples = labels.validation_examples(self.model, num=2)
    self.assertEqual(list(examples), ['validation 0', 'validation 1'])
    for label in examples.values():
      self.assertEqual(label.shape, (64, 64))
      self.assertTrue(0 <= label.min() and label.max() < 6)
    self.assertFalse(np.array_equal(*examples.values()))
    # A data set that is not on this machine: no examples, no error.
    config = demo_config()
    config.data.name = 'ade20k'
    config.data.root = os.path.join(self.create_tempdir().full_path, 'no')
    config.data.num_classes = 151
    absent = adapter.ModelAdapter(synthesis.Synthesizer(
        config, synthesis.random_variables(config), source='absent'))
    self.assertEqual(labels.validation_examples(absent), {})

  def test_command_line_errors_are_one_line(self):
    missing = os.path.join(self.create_tempdir().full_path, 'missing')
    result = subprocess.run(
        [sys.executable, '-m', 'oasis_jax.demo', f'--checkpoint={missing}'],
        cwd=_REPO, capture_output=True, text=True, timeout=300, check=False)
    self.assertEqual(result.returncode, 1)
    expected = (r'^ERROR: the demo needs gradio' if layout.gr is None else
                f'^ERROR: {missing} is not an oasis-jax inference checkpoint')
    self.assertRegex(result.stderr.strip().splitlines()[-1], expected)

  def test_class_names_from_the_data_set_a_file_or_ids(self):
    names = labels.class_names(ml_collections.ConfigDict(
        {'name': 'cityscapes', 'dontcare_id': 0}), 35)
    self.assertEqual(names[7], '7: road')
    self.assertEqual(names[34], '34: license plate')
    generic = labels.class_names(self.synth.config.data, 3)
    self.assertEqual(generic, ['0: unlabeled', '1: class 1', '2: class 2'])
    path = self.create_tempfile(content='sky\n\nsea\n').full_path
    self.assertEqual(
        labels.class_names(self.synth.config.data, 3, path),
        ['0: sky', '1: sea', '2: class 2'])
    self.assertEqual(self.demo.class_id('5: class 5'), 5)
    self.assertEqual(self.demo.class_colour('0: unlabeled'), '#000000')
    self.assertLen(self.demo.brush_colours(), 6)

  def test_generator_without_3d_noise_is_refused(self):
    config = demo_config()
    config.generator.use_3d_noise = False
    synth = synthesis.Synthesizer(
        config, synthesis.random_variables(config), source='no noise')
    with self.assertRaisesRegex(adapter.DemoError, 'needs a generator with '
                                '3D noise'):
      adapter.ModelAdapter(synth)

  # ---- images ----------------------------------------------------------------

  def test_generate_gives_seeded_distinct_samples_of_the_label_size(self):
    samples = self.demo.generate(_label(), 3, seed=5)
    self.assertEqual(samples.images.shape, (3, 64, 64, 3))
    self.assertEqual(samples.images.dtype, np.uint8)
    self.assertEqual(samples.z.shape, (3, 64, 64, 4))
    self.assertEqual(samples.seed, 5)
    self.assertGreater(samples.images.std(), 5.0)  # Not blank.
    self.assertGreater(np.abs(samples.images[0].astype(int) -
                              samples.images[1]).mean(), 1.0)
    again = self.demo.generate(_label(), 3, seed=5)
    np.testing.assert_array_equal(again.images, samples.images)
    # The noise of the Synthesizer's samples of that seed, at every pixel.
    np.testing.assert_array_equal(
        samples.z, np.broadcast_to(self.synth.noise(5, 3)[:, None, None],
                                   (3, 64, 64, 4)))
    other = self.demo.generate(_label(), 3, seed=6)
    self.assertGreater(np.abs(other.images.astype(int) -
                              samples.images).mean(), 1.0)

  def test_generate_rejects_bad_counts_and_labels(self):
    with self.assertRaisesRegex(adapter.DemoError, r'samples 9; 1 to 8'):
      self.demo.generate(_label(), 9, seed=0)
    with self.assertRaisesRegex(adapter.DemoError, r'class ids \[7\]'):
      self.demo.generate(np.full((64, 64), 7), 1, seed=0)

  def test_resample_changes_the_region_far_more_than_the_rest(self):
    samples = self.demo.generate(_label(), 2, seed=1)
    mask = self.demo.region(samples, 'classes', classes=['4: class 4'])
    np.testing.assert_array_equal(mask, _label() == 4)
    edited = self.demo.resample(samples, mask, seed=4)
    self.assertEqual(edited.edits, 1)
    change = np.abs(edited.images.astype(float) - samples.images).mean(-1)
    inside, outside = change[:, mask].mean(), change[:, ~mask].mean()
    self.assertGreater(inside, 5 * outside)
    self.assertGreater(inside, 5.0)
    # The noise changed inside only.
    np.testing.assert_array_equal(edited.z[:, ~mask], samples.z[:, ~mask])
    self.assertTrue((edited.z[:, mask] != samples.z[:, mask]).all())
    # Chained edits: a painted mask on the edited samples.
    painted = _layer((64, 64), np.s_[0:16, 44:60], (255, 255, 255))
    mask2 = self.demo.region(edited, 'mask', {'layers': [painted]})
    self.assertEqual(mask2.sum(), 256)
    again = self.demo.resample(edited, mask2, seed=5)
    self.assertEqual(again.edits, 2)
    np.testing.assert_array_equal(again.z[:, mask & ~mask2],
                                  edited.z[:, mask & ~mask2])

  def test_region_errors_are_clear(self):
    samples = self.demo.generate(_label(), 1, seed=1)
    with self.assertRaisesRegex(adapter.DemoError, 'Paint the region'):
      self.demo.region(samples, 'mask', {'layers': []})
    with self.assertRaisesRegex(adapter.DemoError, 'at least one class'):
      self.demo.region(samples, 'classes', classes=[])
    with self.assertRaisesRegex(adapter.DemoError, r'no pixels of'):
      self.demo.region(samples, 'classes', classes=['1: class 1'])
    with self.assertRaisesRegex(adapter.DemoError, 'Generate images first'):
      self.demo.resample(None, np.ones((64, 64), bool), seed=1)

  def test_interpolation_runs_from_one_sample_to_the_other(self):
    samples = self.demo.generate(_label(), 3, seed=2)
    start = self.demo.interpolate(samples, 1, 3, 0.0)
    end = self.demo.interpolate(samples, 1, 3, 1.0)
    middle = self.demo.interpolate(samples, 1, 3, 0.5)
    self.assertEqual(start.shape, (64, 64, 3))
    # The ends are the samples (up to float rounding of the noise).
    self.assertLessEqual(np.abs(start.astype(int) - samples.images[0]).max(),
                         1)
    self.assertLessEqual(np.abs(end.astype(int) - samples.images[2]).max(), 1)
    for image in (samples.images[0], samples.images[2]):
      self.assertGreater(np.abs(middle.astype(int) - image).mean(), 0.5)
    with self.assertRaisesRegex(adapter.DemoError, 'choose from 1 to 3'):
      self.demo.interpolate(samples, 1, 4, 0.5)

  def test_downloads_hold_the_label_map_and_the_samples(self):
    samples = self.demo.generate(_label(), 2, seed=7)
    files = self.demo.save_downloads(samples)
    self.assertEqual([os.path.basename(f) for f in files],
                     ['label_ids.png', 'label_colours.png',
                      'seed7_sample1.png', 'seed7_sample2.png'])
    np.testing.assert_array_equal(np.asarray(Image.open(files[0])), _label())
    np.testing.assert_array_equal(np.asarray(Image.open(files[3])),
                                  samples.images[1])
    edited = self.demo.resample(samples, _label() == 5, seed=1)
    self.assertEqual(os.path.basename(self.demo.save_downloads(edited)[2]),
                     'seed7_edit1_sample1.png')

  def test_build_app_makes_a_page(self):
    if layout.gr is None:
      self.skipTest('gradio is not installed (pip install -e ".[demo]").')
    page = layout.build_app(self.demo)
    self.assertIsInstance(page, layout.gr.Blocks)
    ids = {getattr(b, 'elem_id', None) for b in page.blocks.values()}
    self.assertContainsSubset(
        {'label_editor', 'label_upload', 'generate', 'samples', 'seed',
         'resample', 'mask_editor', 'region_classes', 'interp_t',
         'downloads', 'status'}, ids)


if __name__ == '__main__':
  absltest.main()
