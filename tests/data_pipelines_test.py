"""Tests of data_pipelines: layouts, label conventions, routes, bad data."""

import json
import os
import shutil
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from PIL import Image

import data_pipelines
from data_pipelines import core
from data_pipelines import sources
from data_pipelines import synthetic
from data_pipelines import testing
from data_pipelines import transforms

FOLDER_DATASETS = ('ade20k', 'coco_stuff', 'cityscapes', 'folder')


def _expected_ids(name: str, raw: np.ndarray) -> np.ndarray:
  """The label conventions of docs/labels.md, written out independently."""
  raw = raw.astype(np.int64)
  if name == 'coco_stuff':
    return np.where(raw == 255, 0, raw + 1)
  return raw


def _decoded_image(path: str) -> np.ndarray:
  return np.asarray(Image.open(path).convert('RGB'))


class _TmpDirMixin:

  def tmpdir(self) -> str:
    path = tempfile.mkdtemp(prefix='oasis_data_test_')
    self.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


class LayoutAndConventionTest(_TmpDirMixin, parameterized.TestCase):

  @parameterized.parameters(*FOLDER_DATASETS)
  def test_source_yields_pairs_in_sorted_order_with_remapped_ids(self, name):
    root = self.tmpdir()
    written = testing.write_tree(name, root, counts={'train': 4, 'val': 2})
    config = testing.make_config(name, root)
    source = data_pipelines.make_source(config.data, 'train')
    self.assertLen(source, 4)
    self.assertEqual(data_pipelines.num_examples(config.data, 'val'), 2)
    for i, pair in enumerate(written['train']):
      example = source[i]
      self.assertEqual(example['image'].dtype, np.uint8)
      self.assertEqual(example['label'].dtype, np.int32)
      self.assertEqual(int(example['index']), i)
      np.testing.assert_array_equal(example['image'],
                                    _decoded_image(pair.image_path))
      np.testing.assert_array_equal(example['label'],
                                    _expected_ids(name, pair.raw_label))

  def test_coco_stuff_adds_one_and_maps_255_to_dontcare(self):
    root = self.tmpdir()
    raw = np.array([[0, 1, 181, 255]] * 4, np.uint8)
    testing.write_tree('coco_stuff', root, counts={'train': 1}, hw=(4, 4),
                       label_fn=lambda i, s: raw)
    source = data_pipelines.make_source(
        testing.make_config('coco_stuff', root).data, 'train')
    np.testing.assert_array_equal(source[0]['label'][0], [1, 2, 182, 0])

  @parameterized.parameters('ade20k', 'cityscapes')
  def test_ade20k_and_cityscapes_keep_png_values(self, name):
    root = self.tmpdir()
    top = {'ade20k': 150, 'cityscapes': 33}[name]
    raw = np.array([[0, 1, 7, top]] * 4, np.uint8)
    testing.write_tree(name, root, counts={'train': 1}, hw=(4, 4),
                       label_fn=lambda i, s: raw)
    source = data_pipelines.make_source(
        testing.make_config(name, root).data, 'train')
    np.testing.assert_array_equal(source[0]['label'][0], [0, 1, 7, top])

  def test_real_file_names_and_split_folders(self):
    root = self.tmpdir()
    testing.write_tree('ade20k', root, counts={'train': 2, 'val': 1})
    testing.write_tree('coco_stuff', root, counts={'train': 1, 'val': 1})
    testing.write_tree('cityscapes', root, counts={'train': 4, 'val': 1})
    ade = data_pipelines.get_dataset(testing.make_config('ade20k', root).data)
    pairs = ade.list_pairs('train')
    self.assertEqual(os.path.relpath(pairs[0].image, root),
                     'images/training/ADE_train_00000001.jpg')
    self.assertEqual(os.path.relpath(pairs[0].label, root),
                     'annotations/training/ADE_train_00000001.png')
    val = ade.list_pairs('val')
    self.assertEqual(os.path.relpath(val[0].image, root),
                     'images/validation/ADE_val_00000001.jpg')
    coco = data_pipelines.get_dataset(
        testing.make_config('coco_stuff', root).data)
    self.assertEqual(os.path.relpath(coco.list_pairs('val')[0].label, root),
                     'val_label/000000000139.png')
    city = data_pipelines.get_dataset(
        testing.make_config('cityscapes', root).data)
    pairs = city.list_pairs('train')
    # Other gtFine files (color, instanceIds, polygons) are ignored.
    self.assertLen(pairs, 4)
    self.assertEqual(
        os.path.relpath(pairs[0].image, root),
        'leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png')
    self.assertEqual(
        os.path.relpath(pairs[0].label, root),
        'gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png')
    self.assertEqual([p.key for p in pairs],
                     sorted(p.key for p in pairs))
    self.assertEqual({p.key.split('/')[0] for p in pairs},
                     {'aachen', 'bochum', 'zurich'})

  def test_num_classes_must_match_the_data_set(self):
    config = testing.make_config('coco_stuff', self.tmpdir())
    config.data.num_classes = 151
    with self.assertRaisesRegex(data_pipelines.DataError,
                                r'num_classes=151.*coco_stuff has 183'):
      data_pipelines.make_source(config.data, 'train')

  def test_folder_palette_maps_colours_to_ids(self):
    root = self.tmpdir()
    palette = [[0, 0, 0], [255, 0, 0], [0, 255, 0], [12, 34, 56]]
    palette_file = os.path.join(root, 'palette.json')
    with open(palette_file, 'w') as f:
      json.dump(palette, f)
    ids = np.array([[0, 1, 2, 3], [3, 2, 1, 0]])
    testing.write_tree('folder', root, counts={'train': 1}, hw=(2, 4),
                       label_fn=lambda i, s: ids)
    # Overwrite the label with its colour-coded version.
    label_path = os.path.join(root, 'labels', 'train', 'photo_0000.png')
    Image.fromarray(np.asarray(palette, np.uint8)[ids]).save(label_path)
    config = testing.make_config('folder', root, num_classes=4,
                                 palette=palette_file)
    source = data_pipelines.make_source(config.data, 'train')
    np.testing.assert_array_equal(source[0]['label'], ids)

  def test_folder_palette_mode_label_uses_its_indices(self):
    root = self.tmpdir()
    ids = np.array([[0, 1, 2, 5]] * 3, np.uint8)
    testing.write_tree('folder', root, counts={'train': 1}, hw=(3, 4),
                       label_fn=lambda i, s: ids)
    label_path = os.path.join(root, 'labels', 'train', 'photo_0000.png')
    p_img = Image.new('P', (4, 3))
    p_img.putpalette(
        np.random.default_rng(0).integers(0, 256, 768).tolist())
    p_img.putdata(ids.ravel().tolist())
    p_img.save(label_path)
    self.assertEqual(Image.open(label_path).mode, 'P')
    source = data_pipelines.make_source(
        testing.make_config('folder', root).data, 'train')
    np.testing.assert_array_equal(source[0]['label'], ids)

  @parameterized.parameters('L', 'P', 'RGBA', 'LA', 'CMYK')
  def test_image_modes_are_converted_to_rgb(self, mode):
    root = self.tmpdir()
    testing.write_tree('folder', root, counts={'train': 1}, hw=(6, 5))
    image_path = os.path.join(root, 'images', 'train', 'photo_0000.png')
    rgb = np.random.default_rng(1).integers(0, 256, (6, 5, 3), np.uint8)
    converted = Image.fromarray(rgb).convert(mode)
    ext = '.jpg' if mode == 'CMYK' else '.png'
    if ext != '.png':
      os.remove(image_path)
      image_path = image_path[:-4] + ext
    converted.save(image_path)
    source = data_pipelines.make_source(
        testing.make_config('folder', root).data, 'train')
    image = source[0]['image']
    self.assertEqual(image.shape, (6, 5, 3))
    self.assertEqual(image.dtype, np.uint8)
    reference = Image.open(image_path)
    if reference.mode == 'P' and 'transparency' in reference.info:
      reference = reference.convert('RGBA')
    np.testing.assert_array_equal(image,
                                  np.asarray(reference.convert('RGB')))


class TfdsRouteTest(_TmpDirMixin, parameterized.TestCase):

  @parameterized.parameters(*FOLDER_DATASETS)
  def test_tfds_route_gives_the_same_examples(self, name):
    root = self.tmpdir()
    testing.write_tree(name, root, counts={'train': 5, 'val': 2}, seed=3)
    config = testing.make_config(name, root)
    folder_source = data_pipelines.make_source(config.data, 'train')
    config.data.source = 'tfds'
    config.data.tfds_data_dir = os.path.join(self.tmpdir(), 'tfds')
    tfds_source = data_pipelines.make_source(config.data, 'train')
    self.assertIsInstance(tfds_source, sources.TfdsSource)
    self.assertLen(tfds_source, len(folder_source))
    for i in range(len(folder_source)):
      a, b = folder_source[i], tfds_source[i]
      self.assertEqual(sorted(a), sorted(b))
      for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    self.assertEqual(data_pipelines.num_examples(config.data, 'val'), 2)
    self.assertTrue(os.path.isdir(os.path.join(
        config.data.tfds_data_dir, f'oasis_{name}', '1.0.0')))


class BadDataTest(_TmpDirMixin, parameterized.TestCase):
  """Every bad-data case raises a DataError whose message names the file."""

  def _tree(self, name='ade20k', **kwargs):
    root = self.tmpdir()
    written = testing.write_tree(name, root, counts={'train': 3, 'val': 1},
                                 **kwargs)
    return root, written['train']

  def _assert_error(self, config, path, what, split='train'):
    with self.assertRaises(data_pipelines.DataError) as cm:
      source = data_pipelines.make_source(config.data, split)
      for i in range(len(source)):
        source[i]
    message = str(cm.exception)
    self.assertIn(path, message)
    self.assertRegex(message, what)
    return message

  def test_image_without_label(self):
    root, pairs = self._tree()
    os.remove(pairs[1].label_path)
    self._assert_error(testing.make_config('ade20k', root),
                       pairs[1].image_path, 'image without a label')

  def test_label_without_image(self):
    root, pairs = self._tree('coco_stuff')
    os.remove(pairs[2].image_path)
    self._assert_error(testing.make_config('coco_stuff', root),
                       pairs[2].label_path, 'label without an image')

  def test_mismatched_sizes(self):
    root, pairs = self._tree()
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(pairs[0].label_path)
    message = self._assert_error(testing.make_config('ade20k', root),
                                 pairs[0].image_path, r'32x24 \(WxH\)')
    self.assertIn(pairs[0].label_path, message)
    self.assertIn('12x10', message)

  @parameterized.parameters(('ade20k', 151, 151), ('ade20k', 200, 200),
                            ('coco_stuff', 190, 191),
                            ('cityscapes', 35, 35))
  def test_label_id_not_below_num_classes(self, name, raw, class_id):
    root, pairs = self._tree(name)
    label = pairs[1].raw_label.copy()
    label[0, 0] = raw
    Image.fromarray(label).save(pairs[1].label_path)
    config = testing.make_config(name, root)
    self._assert_error(
        config, pairs[1].label_path,
        rf'class ids outside \[0, {config.data.num_classes}\).*{class_id} '
        r'\(1 px\)')

  def test_folder_label_id_not_below_num_classes(self):
    root, pairs = self._tree('folder', num_classes=4)
    label = pairs[0].raw_label.copy()
    label[2, 3] = 4
    Image.fromarray(label).save(pairs[0].label_path)
    self._assert_error(testing.make_config('folder', root, num_classes=4),
                       pairs[0].label_path, r'outside \[0, 4\): 4 \(1 px\)')

  @parameterized.parameters('image', 'label')
  def test_unreadable_file(self, which):
    root, pairs = self._tree()
    path = getattr(pairs[2], f'{which}_path')
    with open(path, 'wb') as f:
      f.write(b'this is not an image')
    self._assert_error(testing.make_config('ade20k', root), path,
                       f'unreadable or truncated {which} file')

  @parameterized.parameters(('ade20k', 'image'), ('ade20k', 'label'),
                            ('cityscapes', 'image'))
  def test_truncated_file(self, name, which):
    root, pairs = self._tree(name, hw=(64, 64))
    path = getattr(pairs[0], f'{which}_path')
    with open(path, 'rb') as f:
      data = f.read()
    with open(path, 'wb') as f:
      f.write(data[:len(data) // 2])
    self._assert_error(testing.make_config(name, root), path,
                       f'unreadable or truncated {which} file')

  def test_empty_file(self):
    root, pairs = self._tree()
    open(pairs[0].label_path, 'wb').close()
    self._assert_error(testing.make_config('ade20k', root),
                       pairs[0].label_path, r'empty label file \(0 bytes\)')

  def test_empty_split(self):
    root = self.tmpdir()
    os.makedirs(os.path.join(root, 'images', 'validation'))
    os.makedirs(os.path.join(root, 'annotations', 'validation'))
    self._assert_error(testing.make_config('ade20k', root),
                       os.path.join(root, 'images', 'validation'),
                       'empty split', split='val')

  def test_missing_split_folder(self):
    root, _ = self._tree('coco_stuff')
    shutil.rmtree(os.path.join(root, 'val_label'))
    self._assert_error(testing.make_config('coco_stuff', root),
                       os.path.join(root, 'val_label'), 'folder not found',
                       split='val')

  def test_16_bit_label_png_holds_ids(self):
    root, pairs = self._tree()
    Image.fromarray(pairs[0].raw_label.astype(np.uint16)).save(
        pairs[0].label_path)
    self.assertEqual(Image.open(pairs[0].label_path).mode, 'I;16')
    source = data_pipelines.make_source(
        testing.make_config('ade20k', root).data, 'train')
    labels = [source[i]['label'] for i in range(len(source))]
    self.assertTrue(any(np.array_equal(l, pairs[0].raw_label)
                        for l in labels))

  def test_16_bit_label_png_holds_ids_past_255(self):
    # LVIS's prepared labels: ids past 255 in 16-bit PNGs, read as they are
    # (the policy of label_maps, for every data set); 8-bit PNGs too.
    ids = np.array([[0, 1203, 256], [7, 300, 1]], np.uint16)
    path = os.path.join(self.tmpdir(), 'label.png')
    Image.fromarray(ids).save(path)
    decoder = core.ExampleDecoder(1204)
    label = decoder.decode_label(core.read_bytes(path), path)
    self.assertEqual(label.dtype, np.int32)
    np.testing.assert_array_equal(label, ids)
    Image.fromarray(ids.astype(np.uint8) % 200).save(path)
    np.testing.assert_array_equal(
        decoder.decode_label(core.read_bytes(path), path), ids % 256 % 200)

  def test_colour_coded_label_without_palette(self):
    root, pairs = self._tree('folder')
    colours = np.random.default_rng(0).integers(0, 256, (8, 3), np.uint8)
    Image.fromarray(colours[pairs[1].raw_label]).save(pairs[1].label_path)
    self._assert_error(testing.make_config('folder', root),
                       pairs[1].label_path, 'colour-coded label.*no palette')

  def test_colour_not_in_palette(self):
    root, pairs = self._tree('folder', num_classes=3)
    palette = [[0, 0, 0], [200, 10, 10], [10, 200, 10]]
    palette_file = os.path.join(root, 'palette.json')
    with open(palette_file, 'w') as f:
      json.dump(palette, f)
    for pair in pairs:
      rgb = np.asarray(palette, np.uint8)[pair.raw_label]
      Image.fromarray(rgb).save(pair.label_path)
    rgb = np.asarray(palette, np.uint8)[pairs[2].raw_label]
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(pairs[2].label_path)
    config = testing.make_config('folder', root, num_classes=3,
                                 palette=palette_file)
    message = self._assert_error(config, pairs[2].label_path,
                                 r'not in the palette')
    self.assertIn('(1, 2, 3): 1 px', message)
    self.assertIn(palette_file, message)

  def test_malformed_palette_names_the_palette_file(self):
    root, _ = self._tree('folder')
    palette_file = os.path.join(root, 'palette.json')
    with open(palette_file, 'w') as f:
      f.write('[[0, 0, 0], [1, 2]]')
    self._assert_error(
        testing.make_config('folder', root, palette=palette_file),
        palette_file, r'\[r, g, b\]')

  def test_unpaired_error_lists_every_file_up_to_a_limit(self):
    root, pairs = self._tree()
    for pair in pairs:
      os.remove(pair.label_path)
    message = self._assert_error(testing.make_config('ade20k', root),
                                 pairs[0].image_path, 'image without a label')
    for pair in pairs:
      self.assertIn(pair.image_path, message)

  def test_error_carries_the_file_through_pickling(self):
    import pickle  # pylint: disable=g-import-not-at-top
    error = pickle.loads(pickle.dumps(core.DataError('x.png: bad', 'x.png')))
    self.assertEqual((str(error), error.file), ('x.png: bad', 'x.png'))


class TransformsTest(parameterized.TestCase):

  def test_resizes_follow_pillow_bicubic_and_nearest(self):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (30, 40, 3), np.uint8)
    label = rng.integers(0, 150, (30, 40)).astype(np.int32)
    np.testing.assert_array_equal(
        transforms.resize_image(image, (17, 23)),
        np.asarray(Image.fromarray(image).resize((23, 17), Image.BICUBIC)))
    resized = transforms.resize_label(label, (50, 33))
    self.assertEqual(resized.dtype, np.int32)
    np.testing.assert_array_equal(
        resized, np.asarray(Image.fromarray(label.astype(np.uint8)).resize(
            (33, 50), Image.NEAREST)))
    wide = label * 10  # Ids >= 256 take Pillow's 32-bit path.
    np.testing.assert_array_equal(transforms.resize_label(wide, (50, 33)),
                                  resized * 10)

  def test_crop_and_flip_move_image_and_label_together(self):
    h, w, lh, lw = 8, 12, 11, 17
    rng = np.random.default_rng(0)
    label = rng.integers(0, 20, (lh, lw)).astype(np.int32)
    image = np.stack([label * 10, np.tile(np.arange(lw) * 9, (lh, 1)),
                      np.tile(np.arange(lh)[:, None] * 20, (1, lw))],
                     -1).astype(np.uint8)
    augment = transforms.RandomCropAndFlip((h, w), (lh, lw), flip=True,
                                           seed=5)
    flips, offsets = set(), set()
    for position in range(40):
      out = augment(position, {'image': image, 'label': label})
      self.assertEqual(out['image'].shape, (h, w, 3))
      self.assertEqual(out['label'].shape, (h, w))
      np.testing.assert_array_equal(out['image'][..., 0], out['label'] * 10)
      top, left, flipped = augment.draw(position)
      expected = label[top:top + h, left:left + w]
      if flipped:
        expected = expected[:, ::-1]
      np.testing.assert_array_equal(out['label'], expected)
      columns = out['image'][0, :, 1] // 9
      np.testing.assert_array_equal(
          columns, np.arange(left, left + w)[::-1 if flipped else 1])
      np.testing.assert_array_equal(out['image'][:, 0, 2] // 20,
                                    np.arange(top, top + h))
      flips.add(flipped)
      offsets.add((top, left))
      again = augment(position, {'image': image, 'label': label})
      np.testing.assert_array_equal(again['image'], out['image'])
    self.assertEqual(flips, {False, True})
    self.assertGreater(len(offsets), 10)

  def test_official_resize_then_crop(self):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (40, 50, 3), np.uint8)
    label = rng.integers(0, 30, (40, 50)).astype(np.int32)
    augment = transforms.RandomCropAndFlip((16, 16), (19, 19), seed=0)
    out = augment(3, {'image': image, 'label': label})
    top, left, flipped = augment.draw(3)
    big = np.asarray(Image.fromarray(image).resize((19, 19), Image.BICUBIC))
    expected = big[top:top + 16, left:left + 16]
    expected = expected[:, ::-1] if flipped else expected
    np.testing.assert_array_equal(out['image'], expected)

  def test_no_crop_resizes_to_the_output_size(self):
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (64, 128, 3), np.uint8)
    label = rng.integers(0, 34, (64, 128)).astype(np.int32)
    augment = transforms.RandomCropAndFlip((16, 32), None, flip=False)
    out = augment(0, {'image': image, 'label': label})
    np.testing.assert_array_equal(out['image'],
                                  transforms.resize_image(image, (16, 32)))
    np.testing.assert_array_equal(out['label'],
                                  transforms.resize_label(label, (16, 32)))

  def test_eval_resize(self):
    rng = np.random.default_rng(3)
    example = {'image': rng.integers(0, 256, (20, 30, 3), np.uint8),
               'label': rng.integers(0, 9, (20, 30)).astype(np.int32)}
    out = transforms.ResizeToImageSize((8, 8))(example)
    self.assertEqual(out['image'].shape, (8, 8, 3))
    self.assertEqual(out['label'].shape, (8, 8))


class SyntheticTest(parameterized.TestCase):

  def test_deterministic_by_seed_split_and_index(self):
    a = synthetic.SyntheticSource(8, (32, 32), 6, seed=1)
    b = synthetic.SyntheticSource(8, (32, 32), 6, seed=1)
    np.testing.assert_array_equal(a[3]['image'], b[3]['image'])
    np.testing.assert_array_equal(a[3]['label'], b[3]['label'])
    others = [a[4], synthetic.SyntheticSource(8, (32, 32), 6, seed=2)[3],
              synthetic.SyntheticSource(8, (32, 32), 6, seed=1,
                                        split='val')[3]]
    for other in others:
      self.assertFalse(np.array_equal(a[3]['image'], other['image']))

  @parameterized.parameters(((16, 16), 2), ((32, 64), 6), ((48, 40), 35),
                            ((24, 24), 183))
  def test_any_size_and_class_count(self, hw, num_classes):
    source = synthetic.SyntheticSource(4, hw, num_classes)
    for i in range(4):
      example = source[i]
      self.assertEqual(example['image'].shape, hw + (3,))
      self.assertEqual(example['image'].dtype, np.uint8)
      self.assertEqual(example['label'].shape, hw)
      self.assertEqual(example['label'].dtype, np.int32)
      self.assertTrue(0 <= example['label'].min())
      self.assertLess(example['label'].max(), num_classes)

  def test_classes_are_visually_distinct_and_dontcare_is_small(self):
    source = synthetic.SyntheticSource(40, (64, 64), 6)
    sums = np.zeros((6, 3))
    counts = np.zeros(6)
    for i in range(40):
      example = source[i]
      label = example['label'].ravel()
      counts += np.bincount(label, minlength=6)
      for c in range(3):
        sums[:, c] += np.bincount(label, example['image'][..., c].ravel(),
                                  minlength=6)
    self.assertTrue((counts > 0).all())
    self.assertLess(counts[0] / counts.sum(), 0.05)  # Don't-care patches.
    means = sums / counts[:, None]
    for a in range(1, 6):
      for b in range(a + 1, 6):
        self.assertGreater(np.linalg.norm(means[a] - means[b]), 40.0,
                           (a, b, means))

  def test_no_dontcare_patches_without_a_dontcare_class(self):
    source = synthetic.SyntheticSource(10, (32, 32), 3, dontcare_id=-1)
    seen = set()
    for i in range(10):
      seen |= set(np.unique(source[i]['label']).tolist())
    self.assertEqual(seen, {0, 1, 2})


if __name__ == '__main__':
  absltest.main()
