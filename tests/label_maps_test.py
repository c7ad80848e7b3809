"""Tests of data_pipelines.label_maps: one label policy for every reader."""

import io
import json
import os

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from PIL import Image

from data_pipelines import errors
from data_pipelines import label_maps

_IDS = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], np.uint8)
_PALETTE = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [12, 34, 56]],
                    np.uint8)


def _png(img: Image.Image) -> bytes:
  buf = io.BytesIO()
  img.save(buf, format='PNG')
  return buf.getvalue()


class DecodeLabelTest(parameterized.TestCase):

  @parameterized.parameters('L', 'LA', 'P')
  def test_single_channel_images_hold_ids(self, mode):
    if mode == 'P':
      img = Image.new('P', (4, 2))
      img.putpalette(np.random.default_rng(0).integers(0, 256, 768).tolist())
      img.putdata(_IDS.ravel().tolist())
    else:
      img = Image.fromarray(_IDS).convert(mode)
    ids = label_maps.decode_label(_png(img), 'x.png',
                                  palette=label_maps.PaletteMatcher(_PALETTE))
    np.testing.assert_array_equal(ids, _IDS)  # P: indices, not colours.
    self.assertEqual(ids.dtype, np.int32)

  def test_16_bit_png_holds_ids_above_255(self):
    ids = np.array([[0, 300], [1203, 65535]], np.uint16)
    data = _png(Image.fromarray(ids))
    self.assertEqual(Image.open(io.BytesIO(data)).mode, 'I;16')
    np.testing.assert_array_equal(label_maps.decode_label(data, 'x.png'), ids)

  def test_float_image_is_rejected(self):
    buf = io.BytesIO()
    Image.fromarray(_IDS.astype(np.float32)).save(buf, format='TIFF')
    with self.assertRaisesRegex(errors.DataError,
                                r'x\.tif: unsupported label image mode F'):
      label_maps.decode_label(buf.getvalue(), 'x.tif')

  def test_palette_colours_become_ids_without_remap(self):
    data = _png(Image.fromarray(_PALETTE[_IDS]))
    ids = label_maps.decode_label(
        data, 'x.png', palette=label_maps.PaletteMatcher(_PALETTE),
        remap=lambda raw: raw + 100)
    np.testing.assert_array_equal(ids, _IDS)

  def test_shared_colour_gives_its_first_id(self):
    palette = np.array([[9, 9, 9], [1, 2, 3], [1, 2, 3]], np.uint8)
    data = _png(Image.fromarray(palette[np.array([[1, 2, 0]])]))
    ids = label_maps.decode_label(data, 'x.png',
                                  palette=label_maps.PaletteMatcher(palette))
    np.testing.assert_array_equal(ids, [[1, 1, 0]])

  def test_grey_rgb_outside_the_palette_holds_ids_and_is_remapped(self):
    data = _png(Image.fromarray(np.repeat(_IDS[..., None] + 5, 3, -1)))
    ids = label_maps.decode_label(
        data, 'x.png', palette=label_maps.PaletteMatcher(_PALETTE),
        remap=lambda raw: raw - 5)
    np.testing.assert_array_equal(ids, _IDS)

  def test_colours_outside_the_palette_are_listed(self):
    rgb = _PALETTE[_IDS].copy()
    rgb[0, 0] = rgb[1, 1] = (1, 2, 3)
    with self.assertRaisesRegex(
        errors.DataError,
        r'x\.png: 1 colour\(s\) not in the palette pal\.json: '
        r'\(1, 2, 3\): 2 px\.'):
      label_maps.decode_label(
          _png(Image.fromarray(rgb)), 'x.png',
          palette=label_maps.PaletteMatcher(_PALETTE, 'pal.json'))

  def test_colours_without_palette_are_an_error(self):
    with self.assertRaisesRegex(errors.DataError,
                                r'x\.png: colour-coded label.*no palette'):
      label_maps.decode_label(_png(Image.fromarray(_PALETTE[_IDS])), 'x.png')

  def test_truncated_file_names_the_file(self):
    data = _png(Image.fromarray(_IDS))[:20]
    with self.assertRaisesRegex(errors.DataError,
                                r'x\.png: unreadable or truncated label'):
      label_maps.decode_label(data, 'x.png')


class CheckIdsTest(absltest.TestCase):

  def test_ids_outside_the_range_are_listed_with_pixel_counts(self):
    label = np.array([[0, 7, 7], [-1, 2, 3]])
    with self.assertRaisesRegex(
        errors.DataError,
        r'^m\.png: class ids outside \[0, 4\): -1 \(1 px\), 7 \(2 px\) '
        r'hint\.$'):
      label_maps.check_ids(label, 4, 'm.png', hint=' hint')
    label_maps.check_ids(label.clip(0, 3), 4, 'm.png')  # No error.

  def test_read_label_reads_and_checks(self):
    path = os.path.join(self.create_tempdir().full_path, 'l.png')
    Image.fromarray(_IDS).save(path)
    np.testing.assert_array_equal(label_maps.read_label(path, 4), _IDS)
    with self.assertRaisesRegex(errors.DataError, r'l\.png: class ids'):
      label_maps.read_label(path, 3)
    with self.assertRaisesRegex(errors.DataError, 'missing.png: cannot read'):
      label_maps.read_label(path + 'missing.png', 3)


class LoadPaletteTest(absltest.TestCase):

  def _write(self, entries) -> str:
    path = os.path.join(self.create_tempdir().full_path, 'palette.json')
    with open(path, 'w') as f:
      json.dump(entries, f)
    return path

  def test_reads_colours(self):
    path = self._write(_PALETTE.tolist())
    np.testing.assert_array_equal(label_maps.load_palette(path, 5), _PALETTE)

  def test_malformed_repeated_or_too_long_palettes_name_the_file(self):
    for entries, message in (([[1, 2]], r'\[r, g, b\]'),
                             ([[1, 2, 3], [1, 2, 3]], 'more than one'),
                             ([[0, 0, 0]] * 1 + [[1, 1, 1]], '2 colours')):
      path = self._write(entries)
      with self.assertRaisesRegex(errors.DataError,
                                  f'{path}: .*{message}'):
        label_maps.load_palette(path, 1 if message == '2 colours' else 4)


if __name__ == '__main__':
  absltest.main()
