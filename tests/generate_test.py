"""Tests of `python -m oasis_jax.generate` and the data sets' palettes."""

import functools
import os
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import ml_collections
import numpy as np
from PIL import Image

from configs import tiny64 as tiny64_lib
from oasis_jax.inference import export_format
from oasis_jax import generate
from oasis_jax.inference import synthesis
from data_pipelines import palette_data
from data_pipelines import palettes

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


tiny_config = tiny64_lib.get_config


def _label(seed: int, size: int = 64) -> np.ndarray:
  """Sky (3) over ground (1) with a square object (2) and a tree (5)."""
  rng = np.random.default_rng(seed)
  label = np.full((size, size), 3, np.uint8)
  label[size * 5 // 8:] = 1
  y, x = rng.integers(0, size // 2, 2)
  label[y:y + size // 4, x:x + size // 4] = 2
  label[: size // 8, : size // 8] = 5
  return label


@functools.lru_cache(maxsize=None)
def _checkpoint(root: str) -> str:
  return export_format.save_inference(
      os.path.join(root, 'ckpt'), tiny_config(),
      synthesis.random_variables(tiny_config(), seed=3), source='test')


class GenerateTest(parameterized.TestCase):
  """The CLI's work on a folder of id and RGB label PNGs."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp(prefix='generate_test_')
    cls.synth = synthesis.Synthesizer.from_checkpoint(_checkpoint(cls.root))
    cls.labels_dir = os.path.join(cls.root, 'labels')
    os.makedirs(cls.labels_dir)
    cls.ids = {'a': _label(0), 'b': _label(1)}
    Image.fromarray(cls.ids['a']).save(os.path.join(cls.labels_dir, 'a.png'))
    # 'b' in the palette's colours (RGB), as the grids draw labels.
    rgb = palettes.colorize(cls.ids['b'], cls.synth.palette)
    Image.fromarray(rgb).save(os.path.join(cls.labels_dir, 'b.png'))
    # 'c' at half the size: resized (nearest) to the model's 64x64.
    Image.fromarray(_label(2, 32)).save(os.path.join(cls.labels_dir, 'c.png'))

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def _run(self, out, **kwargs):
    files = generate.list_label_files(self.labels_dir)
    return generate.run(self.synth, files, out, **kwargs)

  def test_writes_one_png_per_sample_and_a_grid_per_label_map(self):
    out = self.create_tempdir().full_path
    written = self._run(out, num_samples=2, seed=3)
    expected = {f'{s}_{k}.png' for s in 'abc' for k in range(2)}
    self.assertEqual(set(os.listdir(out)), expected | {'grids'})
    self.assertEqual(set(os.listdir(os.path.join(out, 'grids'))),
                     {'a.png', 'b.png', 'c.png'})
    self.assertLen(written, 9)
    image = np.asarray(Image.open(os.path.join(out, 'a_1.png')))
    self.assertEqual(image.shape, (64, 64, 3))
    grid = np.asarray(Image.open(os.path.join(out, 'grids', 'b.png')))
    self.assertEqual(grid.shape, (1 * 66 + 2, 3 * 66 + 2, 3))
    # The grid's first tile is the colourised label, then the samples.
    np.testing.assert_array_equal(
        grid[2:66, 2:66], palettes.colorize(self.ids['b'], self.synth.palette))
    np.testing.assert_array_equal(
        grid[2:66, 134:198], np.asarray(Image.open(os.path.join(out,
                                                                'b_1.png'))))

  def test_edit_classes_write_edited_copies(self):
    out = self.create_tempdir().full_path
    self._run(out, num_samples=1, seed=3, edit_classes=[2])
    self.assertEqual(set(os.listdir(out)) - {'grids'},
                     {f'{s}_0{e}.png' for s in 'abc' for e in ('', '_edit')})
    read = lambda f: np.asarray(Image.open(os.path.join(out, f)), np.float32)
    self.assertGreater(np.abs(read('a_0_edit.png') - read('a_0.png')).mean(),
                       1.0)
    # Rows: label | samples, then the edit region | the edited samples.
    grid = np.asarray(Image.open(os.path.join(out, 'grids', 'a.png')))
    self.assertEqual(grid.shape, (2 * 66 + 2, 2 * 66 + 2, 3))
    np.testing.assert_array_equal(grid[68:132, 68:132], read('a_0_edit.png'))
    # Class 4 is in no label map: its "edit" changes nothing.
    unchanged = self.create_tempdir().full_path
    self._run(unchanged, num_samples=1, seed=3, edit_classes=[4])
    np.testing.assert_array_equal(
        np.asarray(Image.open(os.path.join(unchanged, 'b_0_edit.png'))),
        np.asarray(Image.open(os.path.join(unchanged, 'b_0.png'))))

  def test_same_seed_same_files_different_seed_different(self):
    out1, out2, out3, alone = (self.create_tempdir().full_path
                               for _ in range(4))
    self._run(out1, seed=5)
    self._run(out2, seed=5)
    self._run(out3, seed=6)
    read = lambda d, f: np.asarray(Image.open(os.path.join(d, f)))
    for s in 'abc':
      np.testing.assert_array_equal(read(out1, f'{s}_0.png'),
                                    read(out2, f'{s}_0.png'))
      self.assertFalse(np.array_equal(read(out1, f'{s}_0.png'),
                                      read(out3, f'{s}_0.png')))
    # A file's images do not depend on the other files.
    generate.run(self.synth, [os.path.join(self.labels_dir, 'c.png')], alone,
                 seed=5)
    np.testing.assert_array_equal(read(alone, 'c_0.png'),
                                  read(out1, 'c_0.png'))

  def test_reads_ids_rgb_palette_and_resizes(self):
    read = functools.partial(generate.read_label, num_classes=6,
                             palette=self.synth.palette, size=(64, 64))
    np.testing.assert_array_equal(
        read(os.path.join(self.labels_dir, 'a.png')), self.ids['a'])
    np.testing.assert_array_equal(
        read(os.path.join(self.labels_dir, 'b.png')), self.ids['b'])
    c = read(os.path.join(self.labels_dir, 'c.png'))
    np.testing.assert_array_equal(c, np.repeat(np.repeat(_label(2, 32), 2, 0),
                                               2, 1))
    # Grey RGB images of values outside the palette hold ids.
    grey = os.path.join(self.create_tempdir().full_path, 'grey.png')
    Image.fromarray(np.repeat(self.ids['a'][..., None], 3, -1)).save(grey)
    np.testing.assert_array_equal(read(grey), self.ids['a'])

  def test_dataset_label_values_follow_the_on_disk_convention(self):
    config = ml_collections.ConfigDict({'data': {'name': 'coco_stuff'}})
    remap = generate._dataset_remap(config)  # pylint: disable=protected-access
    raw = np.array([[0, 181, 255]], np.uint8)
    path = os.path.join(self.create_tempdir().full_path, 'coco.png')
    Image.fromarray(raw).save(path)
    palette = palettes.coco_stuff_palette()
    np.testing.assert_array_equal(
        generate.read_label(path, 183, palette, remap=remap), [[1, 182, 0]])
    with self.assertRaisesRegex(generate.LabelError,
                                'coco.png: .*255 .*--label_values=dataset'):
      generate.read_label(path, 183, palette)

  def test_out_of_range_id_is_an_error_naming_the_file(self):
    bad = os.path.join(self.create_tempdir().full_path, 'bad_map.png')
    label = _label(0)
    label[5:7, 5:7] = 9
    Image.fromarray(label).save(bad)
    out = self.create_tempdir().full_path
    with self.assertRaisesRegex(generate.LabelError,
                                r'bad_map\.png: class ids outside \[0, 6\): '
                                r'9 \(4 px\)'):
      generate.run(self.synth, [os.path.join(self.labels_dir, 'a.png'), bad],
                   out)
    self.assertEmpty(os.listdir(out))  # Checked before anything is written.
    colours = os.path.join(self.create_tempdir().full_path, 'colours.png')
    Image.fromarray(np.full((64, 64, 3), (1, 2, 3), np.uint8)).save(colours)
    with self.assertRaisesRegex(generate.LabelError,
                                r'colours\.png: 1 colour\(s\) not in the palette of the model'):
      generate.run(self.synth, [colours], out)

  def test_command_line(self):
    """The CLI: the files of a run, and an out-of-range id (exit 1)."""
    out = self.create_tempdir().full_path
    env = dict(os.environ, PYTHONPATH=_REPO)
    cmd = [sys.executable, '-m', 'oasis_jax.generate',
           f'--checkpoint={_checkpoint(self.root)}', f'--out={out}',
           '--num_samples=2', '--seed=3', '--edit_classes=2,5']
    done = subprocess.run(cmd + [f'--labels={self.labels_dir}'], env=env,
                          cwd=_REPO, capture_output=True, text=True,
                          check=False)
    self.assertEqual(done.returncode, 0, done.stderr[-3000:])
    self.assertLen(os.listdir(out), 13)  # 3 files x 2 samples x 2 + grids.
    in_process = self.create_tempdir().full_path
    self._run(in_process, num_samples=2, seed=3, edit_classes=[2, 5])
    for f in ('a_1.png', 'c_0_edit.png'):
      np.testing.assert_array_equal(
          np.asarray(Image.open(os.path.join(out, f))),
          np.asarray(Image.open(os.path.join(in_process, f))))
    bad = os.path.join(self.create_tempdir().full_path, 'oops.png')
    label = _label(0)
    label[0, 0] = 200
    Image.fromarray(label).save(bad)
    done = subprocess.run(cmd + [f'--labels={bad}'], env=env, cwd=_REPO,
                          capture_output=True, text=True, check=False)
    self.assertEqual(done.returncode, 1, done.stderr[-3000:])
    self.assertIn('oops.png: class ids outside [0, 6)', done.stderr)


class PaletteDataTest(parameterized.TestCase):
  """The data sets' colours, and the palettes that use them."""

  def test_coco_stuff_colours_sit_at_the_oasis_ids(self):
    colours = palette_data.coco_stuff_colours()
    self.assertEqual(colours.shape, (183, 3))
    np.testing.assert_array_equal(colours[0], [0, 0, 0])  # unlabeled
    for raw in palette_data.COCO_STUFF_UNUSED_RAW_IDS:
      np.testing.assert_array_equal(colours[raw + 1], [0, 0, 0])
    used = [i for i in range(1, 183)
            if i - 1 not in palette_data.COCO_STUFF_UNUSED_RAW_IDS]
    self.assertLen(used, 171)
    np.testing.assert_array_equal(colours[used],
                                  np.asarray(palette_data.COCO_STUFF_171))
    # person (raw 0), then bicycle; raw 12 (stop sign) is train id 11.
    np.testing.assert_array_equal(colours[1], [0, 192, 64])
    np.testing.assert_array_equal(colours[13], palette_data.COCO_STUFF_171[11])

  @parameterized.parameters(
      ('cityscapes', 35, 7, (128, 64, 128)),  # road
      ('cityscapes', 35, 26, (0, 0, 142)),  # car
      ('ade20k', 151, 1, (120, 120, 120)),  # wall
      ('ade20k', 151, 150, (92, 0, 255)),  # flag
      ('coco_stuff', 183, 183 - 1, (64, 64, 0)),  # wood
      ('folder', 5, 1, (128, 0, 0)),  # generic (PASCAL VOC) colours
  )
  def test_for_config_gives_the_data_set_palette(self, name, n, cid, colour):
    config = ml_collections.ConfigDict(
        {'data': {'name': name, 'num_classes': n, 'palette': ''}})
    palette = palettes.for_config(config)
    self.assertEqual(palette.shape, (n, 3))
    self.assertEqual(tuple(palette[cid]), colour)

  def test_table_sizes(self):
    self.assertLen(palette_data.CITYSCAPES, 35)
    self.assertLen(palette_data.ADE20K, 150)
    self.assertLen(palette_data.COCO_STUFF_171, 171)
    for colour, ids in palette_data.COCO_STUFF_SHARED_COLOURS.items():
      for i in ids:
        self.assertEqual(palette_data.COCO_STUFF_171[i], colour)

  def test_shared_colours_decode_to_the_first_id(self):
    palette = palettes.cityscapes_palette()
    rgb = np.asarray([[palette[4], palette[18], palette[34]]], np.uint8)
    path = os.path.join(self.create_tempdir().full_path, 'c.png')
    Image.fromarray(rgb).save(path)
    np.testing.assert_array_equal(
        generate.read_label(path, 35, palette), [[0, 17, 26]])


if __name__ == '__main__':
  absltest.main()
