"""Tests of the LVIS data set: painting, preparation, crops, inspect, errors."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from configs import lvis as lvis_config
from configs import tiny
import data_pipelines
from data_pipelines import testing
from data_pipelines import transforms
from data_pipelines.lvis import annotations as lvis_annotations
from oasis_jax.training import checkpointing
from oasis_jax.training import input_pipeline
from data_pipelines import palettes
from oasis_jax.training import train

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tmpdir(case) -> str:
  path = tempfile.mkdtemp(prefix='oasis_lvis_test_')
  case.addCleanup(shutil.rmtree, path, ignore_errors=True)
  return path


def _config(root, **data):
  config = lvis_config.get_config()
  config.data.root = root
  for key, value in data.items():
    setattr(config.data, key, value)
  return config


def _masks(data, image_id):
  """(category id, bool mask) of an image's annotations, in file order,
  decoded here with pycocotools' own calls."""
  image = next(i for i in data['images'] if i['id'] == image_id)
  h, w = image['height'], image['width']
  out = []
  for ann in data['annotations']:
    if ann['image_id'] != image_id:
      continue
    seg = ann['segmentation']
    if isinstance(seg, list):
      rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    elif isinstance(seg['counts'], list):
      rle = mask_utils.frPyObjects(seg, h, w)
    else:
      rle = {'size': seg['size'], 'counts': seg['counts'].encode()}
    out.append((ann['category_id'], mask_utils.decode(rle) > 0))
  return out, (h, w)


def _expected_label(data, image_id, paint_order):
  masks, hw = _masks(data, image_id)
  if paint_order == 'small_on_top':
    areas = [m.sum() for _, m in masks]
    masks = [masks[i] for i in np.argsort(-np.asarray(areas), kind='stable')]
  label = np.zeros(hw, np.int64)
  for category_id, mask in masks:
    label[mask] = category_id
  return label


def _image_ids(data, keep_unannotated):
  annotated = {a['image_id'] for a in data['annotations']}
  return sorted(i['id'] for i in data['images']
                if keep_unannotated or i['id'] in annotated)


class LvisDataTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.root = _tmpdir(self)
    self.data = testing.write_lvis_tree(self.root)

  @parameterized.parameters('file', 'small_on_top')
  def test_prepared_labels_equal_pycocotools_masks_pixel_by_pixel(
      self, paint_order):
    config = _config(self.root, paint_order=paint_order)
    for split, keep in (('train', False), ('val', True)):
      source = data_pipelines.make_source(config.data, split)
      ids = _image_ids(self.data[split], keep)
      self.assertLen(source, len(ids))
      for index, image_id in enumerate(ids):
        example = source[index]
        want = _expected_label(self.data[split], image_id, paint_order)
        np.testing.assert_array_equal(example['label'], want)
        self.assertEqual(example['image'].shape, want.shape + (3,))
        png = os.path.join(self.root, f'lvis_labels_{paint_order}',
                           f'{split}_label', f'{image_id:012d}.png')
        with Image.open(png) as img:  # Prepared once, as 16-bit PNGs.
          self.assertEqual(img.mode, 'I;16')
    # Painting on the fly gives the same examples.
    on_the_fly = _config(self.root, paint_order=paint_order,
                         rasterize_on_the_fly=True)
    source = data_pipelines.make_source(on_the_fly.data, 'train')
    prepared = data_pipelines.make_source(config.data, 'train')
    for i in range(len(source)):
      for key in ('image', 'label'):
        np.testing.assert_array_equal(source[i][key], prepared[i][key])

  def test_paint_orders_on_hand_checked_pixels(self):
    # Image 285: small box of category 3 ([12, 18) x [10, 16)), then a big
    # box of 405 over it; image 139: small box 3 drawn after the big 1203.
    file_order = data_pipelines.make_source(_config(self.root).data, 'train')
    small = data_pipelines.make_source(
        _config(self.root, paint_order='small_on_top').data, 'train')
    keys = [p.key for p in data_pipelines.get_dataset(
        _config(self.root).data).list_pairs('train')]
    i285, i139 = keys.index('000000000285'), keys.index('000000000139')
    self.assertEqual(file_order[i285]['label'][13, 15], 405)
    self.assertEqual(small[i285]['label'][13, 15], 3)
    self.assertEqual(file_order[i139]['label'][12, 14], 3)
    self.assertEqual(small[i139]['label'][12, 14], 3)
    self.assertEqual(file_order[i139]['label'][1, 1], 0)  # Unlabeled.
    self.assertIn(1203, file_order[i139]['label'])

  def test_images_without_annotations_follow_the_switches(self):
    default = _config(self.root).data
    train = data_pipelines.get_dataset(default).list_pairs('train')
    val = data_pipelines.get_dataset(default).list_pairs('val')
    self.assertNotIn('000000000632', [p.key for p in train])  # Skipped.
    self.assertIn('000000000785', [p.key for p in val])  # Kept.
    source = data_pipelines.make_source(default, 'val')
    index = [p.key for p in val].index('000000000785')
    self.assertFalse(source[index]['label'].any())  # All unlabeled.
    keep = _config(self.root, keep_unannotated_train=True).data
    self.assertEqual(data_pipelines.num_examples(keep, 'train'), 4)
    drop = _config(self.root, keep_unannotated_val=False).data
    self.assertEqual(data_pipelines.num_examples(drop, 'val'), 2)

  def test_training_crops_take_image_and_label_at_the_same_offsets(self):
    # Images painted with the colours of their label maps: after resize,
    # crop and flip, each label pixel inside a uniform region must still
    # have its colour in the image.
    colours = palettes.lvis_palette().astype(np.int64)
    for split in ('train', 'val'):
      for image in self.data[split]['images']:
        label = _expected_label(self.data[split], image['id'], 'file')
        folder = image['coco_url'].split('/')[-2]
        Image.fromarray(colours[label].astype(np.uint8)).save(
            os.path.join(self.root, folder, f"{image['id']:012d}.jpg"),
            quality=100, subsampling=0)
    config = _config(self.root, image_size=24, load_size=40)
    config.train.batch_size = 3
    dataset = input_pipeline.create_train_dataset(config, process_index=0,
                                                  process_count=1)
    augment_draws = set()
    for step in range(4):
      batch = dataset[step]
      for row in range(3):
        image = batch['image'][row].astype(np.int64)
        label = batch['label'][row]
        # Pixels whose 5x5 neighbourhood has one class (not at the crop's
        # border, where the neighbourhood is partly outside).
        uniform = np.zeros(label.shape, bool)
        uniform[2:-2, 2:-2] = True
        for dy in range(-2, 3):
          for dx in range(-2, 3):
            uniform[2:-2, 2:-2] &= (
                label[2 + dy:22 + dy, 2 + dx:22 + dx] == label[2:-2, 2:-2])
        self.assertGreater(uniform.sum(), 60)
        error = np.abs(image - colours[label]).max(-1)[uniform]
        self.assertLess(np.percentile(error, 95), 24, (step, row))
        augment_draws.add(step * 3 + row)
    # The offsets differ in some example (a swap would misalign it).
    draws = [transforms.RandomCropAndFlip(
        (24, 24), (40, 40), seed=config.seed).draw(p) for p in augment_draws]
    self.assertTrue(any(top != left for top, left, _ in draws))

  def test_inspect_json_reports_histogram_and_frequency_groups(self):
    result = subprocess.run(
        [sys.executable, '-m', 'data_pipelines.inspect',
         '--config=configs/lvis.py', f'--config.data.root={self.root}',
         '--split=train', '--json'], cwd=_REPO, capture_output=True,
        text=True, timeout=300, check=False)
    self.assertEqual(result.returncode, 0, result.stderr[-2000:])
    report = json.loads(result.stdout)
    data = self.data['train']
    labels = [_expected_label(data, i, 'file')
              for i in _image_ids(data, keep_unannotated=False)]
    histogram = np.bincount(np.concatenate([x.ravel() for x in labels]))
    want = {str(c): int(n) for c, n in enumerate(histogram) if n}
    self.assertEqual(report['class_histogram'], want)
    self.assertEqual(report['num_examples'], 3)
    self.assertEqual(report['num_unannotated_images'], 1)
    self.assertFalse(report['unannotated_kept'])
    present = [c for c in range(1, len(histogram)) if histogram[c]]
    self.assertEqual(report['num_categories_present'], len(present))
    total = histogram.sum()
    groups = report['frequency_groups']
    for letter, name in lvis_annotations.FREQUENCY_GROUPS.items():
      ids = [c for c in present if testing.lvis_frequency(c) == letter]
      self.assertEqual(groups[name]['pixels'], int(histogram[ids].sum()))
      self.assertAlmostEqual(groups[name]['share'],
                             histogram[ids].sum() / total)
      self.assertEqual(groups[name]['categories_present'], len(ids))
    self.assertEqual(groups['rare']['categories'], 337)
    self.assertEqual(groups['unlabeled']['pixels'], int(histogram[0]))
    self.assertAlmostEqual(sum(g['share'] for g in groups.values()), 1.0)
    self.assertEqual(report['problems'], [])

  def _assert_one_line_error(self, config, split, *fragments):
    with self.assertRaises(data_pipelines.DataError) as ctx:
      data_pipelines.make_source(config.data, split)
    message = str(ctx.exception)
    self.assertNotIn('\n', message)
    for fragment in fragments:
      self.assertIn(fragment, message)
    return ctx.exception

  def test_missing_image_file_is_a_one_line_error_naming_it(self):
    path = os.path.join(self.root, 'train2017', '000000000724.jpg')
    os.remove(path)
    error = self._assert_one_line_error(_config(self.root), 'train', path,
                                        'image file not found',
                                        'LVIS image 724')
    self.assertEqual(error.file, path)

  @parameterized.parameters(1204, 0, -3)
  def test_category_id_outside_range_is_a_one_line_error(self, bad):
    path = os.path.join(self.root, 'lvis_v1_train.json')
    data = self.data['train']
    data['annotations'][4]['category_id'] = bad
    with open(path, 'w') as f:
      json.dump(data, f)
    ann = data['annotations'][4]
    self._assert_one_line_error(
        _config(self.root), 'train', path, f"annotation {ann['id']}",
        f'category_id {bad}', '1..1203')

  def test_malformed_json_is_a_one_line_error_naming_the_file(self):
    path = os.path.join(self.root, 'lvis_v1_val.json')
    with open(path) as f:
      text = f.read()
    with open(path, 'w') as f:
      f.write(text[:len(text) // 2])
    self._assert_one_line_error(_config(self.root), 'val', path,
                                'malformed JSON')
    # inspect reports it and exits with status 1.
    result = subprocess.run(
        [sys.executable, '-m', 'data_pipelines.inspect',
         '--config=configs/lvis.py', f'--config.data.root={self.root}',
         '--split=val'], cwd=_REPO, capture_output=True, text=True,
        timeout=300, check=False)
    self.assertEqual(result.returncode, 1)
    self.assertIn(f'{path}: malformed JSON', result.stdout)

  def test_labels_prepared_with_another_paint_order_are_an_error(self):
    labels_dir = os.path.join(self.root, 'labels')
    data_pipelines.make_source(
        _config(self.root, labels_dir=labels_dir).data, 'train')
    self._assert_one_line_error(
        _config(self.root, labels_dir=labels_dir,
                paint_order='small_on_top'),
        'train', 'paint_order', 'prepared.json')

  def test_labels_not_prepared_without_build_is_an_error(self):
    config = _config(self.root)
    with self.assertRaisesRegex(data_pipelines.DataError,
                                'not prepared.*data_pipelines.prepare'):
      data_pipelines.make_source(config.data, 'train', allow_build=False)

  def test_prepare_cli_writes_labels_once(self):
    command = [sys.executable, '-m', 'data_pipelines.prepare',
               '--config=configs/lvis.py', f'--config.data.root={self.root}',
               '--splits=val']
    first = subprocess.run(command, cwd=_REPO, capture_output=True,
                           text=True, timeout=300, check=False)
    self.assertEqual(first.returncode, 0, first.stderr[-2000:])
    self.assertIn('val: 3 label maps written', first.stdout)
    second = subprocess.run(command, cwd=_REPO, capture_output=True,
                            text=True, timeout=300, check=False)
    self.assertIn('val: already prepared', second.stdout)

  def test_frequency_groups_and_class_groups(self):
    groups = data_pipelines.class_groups(_config(self.root).data)
    self.assertEqual({k: len(v) for k, v in groups.items()},
                     {'rare': 337, 'common': 461, 'frequent': 405})
    self.assertEqual(groups['frequent'][:2], [1, 2])
    self.assertIsNone(data_pipelines.class_groups(
        testing.make_config('ade20k', self.root).data))


def _tiny_lvis_config(root, num_steps):
  """configs/lvis.py (1204 classes) with tiny.py's sizes: 32x32 crops."""
  config = _config(root, image_size=32, load_size=40)
  small = tiny.get_config()
  for section in ('generator', 'discriminator', 'ema', 'eval'):
    setattr(config, section, small[section])
  config.train = small.train
  config.train.batch_size = 2
  config.train.num_steps = num_steps
  config.eval.batch_size = 2
  return config


class LvisTrainingTest(absltest.TestCase):

  def test_training_on_fake_lvis_checkpoints_and_resumes_exactly(self):
    root = _tmpdir(self)
    testing.write_lvis_tree(root)
    straight = jax.device_get(train.train_and_evaluate(
        _tiny_lvis_config(root, 3), os.path.join(root, 'straight'),
        num_devices=1))
    workdir = os.path.join(root, 'split')
    first = train.train_and_evaluate(_tiny_lvis_config(root, 2), workdir,
                                     num_devices=1)
    self.assertEqual(int(first.step), 2)
    resumed = jax.device_get(train.train_and_evaluate(
        _tiny_lvis_config(root, 3), workdir, num_devices=1))
    self.assertEqual(int(resumed.step), 3)
    self.assertEqual(sorted(os.listdir(os.path.join(
        workdir, checkpointing.CHECKPOINT_DIR))), ['2', '3'])
    # The resumed run continues the data stream and the state bit for bit.
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed),
                    strict=True):
      np.testing.assert_array_equal(a, b)
    kernel = resumed.generator.params['body_0']['norm_0']['mlp_shared'][
        'kernel']
    self.assertEqual(kernel.shape[2], 4 + 1204)  # [z | 1204 classes].


if __name__ == '__main__':
  absltest.main()
