"""`python -m oasis_jax.evaluate miou`: mIoU of a folder of images.

A tiny Cityscapes-like folder (labelIds label maps, random images) is
segmented by DRN-D-105 with the parity fixtures' rule weights through the
command line; its mIoU and per-class IoU must equal those of a confusion
matrix computed here in numpy from the segmenter's own outputs. Unpaired
files and missing weights fail in one FATAL line.
"""

import json
import os
import subprocess
import sys

from absl.testing import absltest
import jax.numpy as jnp
import numpy as np
from PIL import Image

from data_pipelines import testing as data_testing
from oasis_jax.evaluation import miou_folder
from oasis_jax.evaluation.segmenters import networks
from oasis_jax.evaluation.segmenters import protocol as protocol_lib
import segmenter_fixtures

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CITYSCAPES = os.path.join(_REPO, 'configs', 'cityscapes.py')
_STEMS = ('berlin_1', 'bonn_2', 'mainz_3')  # Batch 2: one padded batch.
_HW = (24, 40)  # Images; label maps twice that (the protocol's own case).


def _write_folder(root: str) -> tuple[np.ndarray, np.ndarray]:
  """Writes images/ and labels/ under `root`: (uint8 images, raw labels)."""
  rng = np.random.default_rng(0)
  values = data_testing.raw_label_values('cityscapes')
  images, labels = [], []
  for stem in _STEMS:
    image = rng.integers(0, 256, _HW + (3,), dtype=np.uint8)
    label = data_testing.blocky_label(rng, (2 * _HW[0], 2 * _HW[1]), values)
    for sub, array in (('images', image), ('labels', label)):
      os.makedirs(os.path.join(root, sub), exist_ok=True)
      Image.fromarray(array).save(os.path.join(root, sub, stem + '.png'))
    images.append(image)
    labels.append(label)
  return np.stack(images), np.stack(labels)


def _numpy_confusion(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """DRN's predictions vs the train ids of the labelIds, by hand."""
  model, variables = networks.load(
      'drn_d_105', segmenter_fixtures.weights_npz('drn_d_105'))
  x = ((images / 255 - np.asarray(protocol_lib.CITYSCAPES_MEAN)) /
       np.asarray(protocol_lib.CITYSCAPES_STD))
  scores = networks.scores(model, variables, jnp.asarray(x, jnp.float32),
                           labels.shape[1:])
  preds = np.asarray(scores).argmax(-1)
  table = np.full(256, -1)
  for label_id, train_id in protocol_lib.CITYSCAPES_TRAIN_IDS.items():
    table[label_id] = train_id
  train_ids = table[labels]
  keep = train_ids >= 0
  counts = np.bincount(train_ids[keep] * 19 + preds[keep], minlength=19 ** 2)
  return counts.reshape(19, 19)


def _run(*flags: str) -> subprocess.CompletedProcess:
  command = [sys.executable, '-m', 'oasis_jax.evaluate', 'miou',
             f'--config={_CITYSCAPES}', '--segmenter_network=drn_d_105',
             *flags]
  env = dict(os.environ, PYTHONPATH=_REPO,
             XLA_FLAGS='--xla_force_host_platform_device_count=2')
  return subprocess.run(command, env=env, capture_output=True, text=True,
                        check=False, timeout=600)


def _fatal_lines(result: subprocess.CompletedProcess) -> list[str]:
  return [l for l in result.stderr.splitlines() if l.startswith('FATAL')]


class MiouFolderTest(absltest.TestCase):

  def test_miou_equals_numpy_of_the_segmenters_outputs(self):
    root = self.create_tempdir().full_path
    images, labels = _write_folder(root)
    out = os.path.join(root, 'miou.json')
    result = _run(f'--images={root}/images', f'--labels={root}/labels',
                  '--segmenter_weights=' +
                  segmenter_fixtures.weights_npz('drn_d_105'),
                  '--batch_size=2', f'--out={out}')
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    with open(out) as f:
      written = json.load(f)
    self.assertEqual(json.loads(result.stdout), written)
    conf = _numpy_confusion(images, labels)
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    iou = [float(t / u) if u else None for t, u in zip(tp, union)]
    self.assertEqual(written['num_pixels'], int(conf.sum()))
    self.assertEqual(written['num_images'], len(_STEMS))
    self.assertEqual(written['miou_protocol'], 'cityscapes/drn')
    self.assertEqual(written['miou_segmenter'], 'drn_d_105')
    self.assertLen(written['per_class_iou'], 19)
    for got, want in zip(written['per_class_iou'], iou):
      if want is None:
        self.assertIsNone(got)
      else:
        self.assertAlmostEqual(got, want, places=12)
    self.assertAlmostEqual(written['miou'],
                           np.mean([v for v in iou if v is not None]),
                           places=12)

  def test_unpaired_image_is_one_fatal_line_naming_it(self):
    root = self.create_tempdir().full_path
    _write_folder(root)
    extra = os.path.join(root, 'images', 'zurich_9.png')
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(extra)
    result = _run(f'--images={root}/images', f'--labels={root}/labels',
                  '--segmenter_weights=' +
                  segmenter_fixtures.weights_npz('drn_d_105'))
    self.assertEqual(result.returncode, 1)
    self.assertEqual(_fatal_lines(result), [
        f'FATAL {extra}: unpaired image, no label map zurich_9.* in '
        f'{root}/labels.'])

  def test_missing_weights_is_one_fatal_line_naming_file_and_flag(self):
    root = self.create_tempdir().full_path
    _write_folder(root)
    result = _run(f'--images={root}/images', f'--labels={root}/labels',
                  '--segmenter_weights=/nonexistent/drn.pth')
    self.assertEqual(result.returncode, 1)
    lines = _fatal_lines(result)
    self.assertLen(lines, 1)
    self.assertRegex(lines[0], r'^FATAL /nonexistent/drn.pth: no such file; '
                     r'set --segmenter_weights ')

  def test_label_maps_read_with_the_data_sets_convention(self):
    root = self.create_tempdir().full_path
    written = data_testing.write_tree('coco_stuff', root, {'val': 1})['val']
    config = data_testing.make_config('coco_stuff', root)
    pair = (written[0].image_path, written[0].label_path)
    image, label = miou_folder.read_pair(miou_folder.label_decoder(config),
                                         pair)
    raw = written[0].raw_label.astype(np.int32)
    np.testing.assert_array_equal(label, np.where(raw == 255, 0, raw + 1))
    self.assertEqual(image.shape, raw.shape + (3,))


if __name__ == '__main__':
  absltest.main()
