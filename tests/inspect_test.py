"""Tests of `python -m data_pipelines.inspect`."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np
from PIL import Image

from data_pipelines import inspect as inspect_lib
from data_pipelines import testing

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _coco_overrides(root):
  return ['--config=configs/default.py', '--config.data.name=coco_stuff',
          '--config.data.num_classes=183', f'--config.data.root={root}']


def _run_cli(*args):
  return subprocess.run(
      [sys.executable, '-m', 'data_pipelines.inspect', *args], cwd=_REPO,
      capture_output=True, text=True, timeout=120, check=False)


class InspectTest(absltest.TestCase):

  def tmpdir(self) -> str:
    path = tempfile.mkdtemp(prefix='oasis_inspect_test_')
    self.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path

  def test_clean_split_report(self):
    root = self.tmpdir()
    written = testing.write_tree('coco_stuff', root,
                                 counts={'train': 4, 'val': 1}, hw=(8, 16))
    report = inspect_lib.scan(testing.make_config('coco_stuff', root).data,
                              'train', num_threads=2)
    self.assertEqual(report['num_examples'], 4)
    self.assertEqual(report['image_sizes'], {'16x8': 4})
    self.assertEqual(report['problems'], [])
    raw = np.concatenate([w.raw_label.ravel() for w in written['train']])
    ids = np.where(raw == 255, 0, raw.astype(np.int64) + 1)
    expected = {int(c): int(n) for c, n in enumerate(np.bincount(ids)) if n}
    self.assertEqual(report['class_histogram'], expected)
    text = inspect_lib.format_report(report, 183)
    self.assertIn('4 pairs', text)
    self.assertIn('0 problem(s).', text)

  def test_every_problem_is_reported_with_its_file(self):
    root = self.tmpdir()
    pairs = testing.write_tree('ade20k', root, counts={'train': 8},
                               hw=(32, 32))['train']
    expected = {}
    os.remove(pairs[0].label_path)
    expected[pairs[0].image_path] = 'image without a label'
    os.remove(pairs[1].image_path)
    expected[pairs[1].label_path] = 'label without an image'
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(pairs[2].label_path)
    expected[pairs[2].image_path] = 'but its label'
    bad_ids = pairs[3].raw_label.copy()
    bad_ids[:2, :2] = 160
    Image.fromarray(bad_ids).save(pairs[3].label_path)
    expected[pairs[3].label_path] = 'class ids outside [0, 151)'
    with open(pairs[4].image_path, 'rb') as f:
      data = f.read()
    with open(pairs[4].image_path, 'wb') as f:
      f.write(data[:len(data) // 3])
    expected[pairs[4].image_path] = 'truncated image file'
    wide = pairs[5].raw_label.astype(np.uint16)
    wide[0, 0] = 1000  # 16-bit PNGs hold ids (label_maps): one too large.
    Image.fromarray(wide).save(pairs[5].label_path)
    expected[pairs[5].label_path] = 'class ids outside [0, 151): 1000 (1 px)'
    colours = np.random.default_rng(0).integers(0, 256, (151, 3), np.uint8)
    Image.fromarray(colours[pairs[6].raw_label]).save(pairs[6].label_path)
    expected[pairs[6].label_path] = 'colour-coded label'

    report = inspect_lib.scan(testing.make_config('ade20k', root).data,
                              'train')
    found = {p['file']: p['problem'] for p in report['problems']}
    self.assertEqual(set(found), set(expected))
    for path, what in expected.items():
      self.assertIn(what, found[path])
      self.assertIn(path, found[path])
    # Ids of the bad label are still counted, after remapping.
    self.assertGreaterEqual(report['class_histogram'][160], 4)

  def test_empty_split_is_a_problem(self):
    root = self.tmpdir()
    os.makedirs(os.path.join(root, 'train_img'))
    os.makedirs(os.path.join(root, 'train_label'))
    report = inspect_lib.scan(testing.make_config('coco_stuff', root).data)
    self.assertEqual(report['num_examples'], 0)
    self.assertLen(report['problems'], 1)
    self.assertEqual(report['problems'][0]['file'],
                     os.path.join(root, 'train_img'))
    self.assertIn('empty split', report['problems'][0]['problem'])

  def test_synthetic_has_no_problems(self):
    config = testing.make_config('synthetic', '', num_classes=4,
                                 image_size=16, synthetic_num_examples=6)
    report = inspect_lib.scan(config.data, 'val')
    self.assertEqual(report['num_examples'], 6)
    self.assertEqual(report['image_sizes'], {'16x16': 6})
    self.assertEqual(sum(report['class_histogram'].values()), 6 * 16 * 16)
    self.assertEqual(report['problems'], [])

  def test_cli_json_and_exit_status(self):
    root = self.tmpdir()
    pairs = testing.write_tree('coco_stuff', root,
                               counts={'train': 2, 'val': 2})['val']
    clean = _run_cli(*_coco_overrides(root), '--split=train')
    self.assertEqual(clean.returncode, 0, clean.stderr[-2000:])
    self.assertIn('coco_stuff train', clean.stdout)
    os.remove(pairs[1].label_path)
    broken = _run_cli(*_coco_overrides(root), '--split=val', '--json')
    self.assertNotEqual(broken.returncode, 0)
    report = json.loads(broken.stdout)
    self.assertEqual(report['num_examples'], 1)
    self.assertEqual([p['file'] for p in report['problems']],
                     [pairs[1].image_path])
    ids = np.where(pairs[0].raw_label == 255, 0,
                   pairs[0].raw_label.astype(np.int64) + 1)
    self.assertEqual(
        {int(k): v for k, v in report['class_histogram'].items()},
        {int(c): int(n) for c, n in enumerate(np.bincount(ids.ravel()))
         if n})

  def test_cli_checks_every_split_the_run_reads_by_default(self):
    root = self.tmpdir()
    testing.write_tree('coco_stuff', root, counts={'train': 2})
    os.makedirs(os.path.join(root, 'val_img'))
    os.makedirs(os.path.join(root, 'val_label'))  # An empty val split.
    result = _run_cli(*_coco_overrides(root))
    self.assertEqual(result.returncode, 1, result.stderr[-2000:])
    self.assertIn('coco_stuff train', result.stdout)
    self.assertIn('coco_stuff val', result.stdout)
    self.assertIn('empty split', result.stdout)
    as_json = _run_cli(*_coco_overrides(root), '--json')
    reports = json.loads(as_json.stdout)
    self.assertEqual(sorted(reports), ['train', 'val'])
    self.assertEqual(reports['train']['problems'], [])
    self.assertLen(reports['val']['problems'], 1)


if __name__ == '__main__':
  absltest.main()
