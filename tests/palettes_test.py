"""Tests of the class colour palettes."""

import json

from absl.testing import absltest
from absl.testing import parameterized
import ml_collections
import numpy as np

from data_pipelines import palettes


def _data_config(name, num_classes, palette=''):
  return ml_collections.ConfigDict({'data': {
      'name': name, 'num_classes': num_classes, 'palette': palette}})


class PalettesTest(parameterized.TestCase):

  @parameterized.parameters(2, 6, 35, 151, 183, 300)
  def test_generic_palette_is_distinct_and_deterministic(self, n):
    palette = palettes.generic_palette(n)
    self.assertEqual(palette.shape, (n, 3))
    self.assertEqual(palette.dtype, np.uint8)
    self.assertLen({tuple(c) for c in palette}, n)
    np.testing.assert_array_equal(palette, palettes.generic_palette(n))
    np.testing.assert_array_equal(palette[0], [0, 0, 0])

  def test_lvis_palette_gives_1204_distinct_colours(self):
    config = ml_collections.ConfigDict(
        {'data': {'name': 'lvis', 'num_classes': 1204, 'palette': ''}})
    palette = palettes.for_config(config)
    self.assertEqual(palette.shape, (1204, 3))
    self.assertLen({tuple(c) for c in palette}, 1204)
    np.testing.assert_array_equal(palette[0], [0, 0, 0])  # Unlabeled.

  def test_generic_palette_first_colours_are_pascal_voc(self):
    np.testing.assert_array_equal(
        palettes.generic_palette(4),
        [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]])

  def test_cityscapes_palette_has_the_official_label_id_colours(self):
    palette = palettes.cityscapes_palette()
    self.assertEqual(palette.shape, (35, 3))
    np.testing.assert_array_equal(palette[7], [128, 64, 128])  # road
    np.testing.assert_array_equal(palette[23], [70, 130, 180])  # sky
    np.testing.assert_array_equal(palette[26], [0, 0, 142])  # car
    np.testing.assert_array_equal(palette[33], [119, 11, 32])  # bicycle

  def test_ade20k_palette_puts_unlabeled_first(self):
    palette = palettes.ade20k_palette()
    self.assertEqual(palette.shape, (151, 3))
    np.testing.assert_array_equal(palette[0], [0, 0, 0])
    np.testing.assert_array_equal(palette[1], [120, 120, 120])  # wall
    np.testing.assert_array_equal(palette[150], [92, 0, 255])
    # The standard palette lists (140, 140, 140) twice (ids 7 and 49).
    self.assertLen({tuple(c) for c in palette}, 150)

  @parameterized.named_parameters(
      ('cityscapes', 'cityscapes', 35, palettes.cityscapes_palette),
      ('ade20k', 'ade20k', 151, palettes.ade20k_palette),
      ('coco_stuff', 'coco_stuff', 183, palettes.coco_stuff_palette),
      ('synthetic', 'synthetic', 6, palettes.generic_palette))
  def test_for_config_picks_the_data_set_palette(self, name, n, make):
    np.testing.assert_array_equal(
        palettes.for_config(_data_config(name, n)), make(n))

  def test_for_config_reads_a_json_palette_and_extends_it(self):
    path = self.create_tempfile(content=json.dumps([[1, 2, 3], [4, 5, 6]]))
    palette = palettes.for_config(_data_config('folder', 4, path.full_path))
    np.testing.assert_array_equal(palette[:2], [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(palette[2:],
                                  palettes.generic_palette(4)[2:])

  def test_load_palette_rejects_bad_colours(self):
    path = self.create_tempfile(content=json.dumps([[1, 2, 300]]))
    with self.assertRaisesRegex(ValueError, 'r, g, b'):
      palettes.load_palette(path.full_path, 3)

  def test_colorize_maps_ids_and_draws_unknown_ids_white(self):
    palette = palettes.generic_palette(3)
    label = np.array([[[0, 1], [2, 255]]])
    rgb = palettes.colorize(label, palette)
    self.assertEqual(rgb.shape, (1, 2, 2, 3))
    np.testing.assert_array_equal(rgb[0, 0, 1], palette[1])
    np.testing.assert_array_equal(rgb[0, 1, 0], palette[2])
    np.testing.assert_array_equal(rgb[0, 1, 1], [255, 255, 255])


if __name__ == '__main__':
  absltest.main()
