"""Tests of the prepared format: same batches, checks, interrupts, inspect."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from configs import lvis as lvis_config
from configs import tiny
import data_pipelines
from data_pipelines import inspect as inspect_lib
from data_pipelines import testing
from data_pipelines.prepared import manifest as manifest_lib
from data_pipelines.prepared import writer
from oasis_jax.config import validation as config_validation
from oasis_jax.training import input_pipeline
from oasis_jax.training import train

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYOUTS = ('ade20k', 'coco_stuff', 'cityscapes', 'folder', 'lvis')


def _tmpdir(case) -> str:
  path = tempfile.mkdtemp(prefix='oasis_prepared_test_')
  case.addCleanup(shutil.rmtree, path, ignore_errors=True)
  return path


def _tree(name: str, root: str, train: int = 5):
  """A tiny tree of `name` and a config reading it (16x16 crops of 20x20;
  Cityscapes 16x32 without a crop)."""
  if name == 'lvis':
    testing.write_lvis_tree(root)
    config = lvis_config.get_config()
    config.data.root = root
    config.data.image_size, config.data.load_size = 16, 20
  else:
    testing.write_tree(name, root, counts={'train': train, 'val': 3})
    config = testing.make_config(name, root, image_size=16, load_size=20)
    if name == 'cityscapes':
      config.data.update(image_size=32, aspect_ratio=2.0, load_size=32,
                         random_crop=False)
  config.train.batch_size = 2
  config.eval.batch_size = 2
  return config


def _prepared(config, out: str, **kwargs):
  """A copy of `config` reading `out`, prepared from its tree."""
  kwargs.setdefault('records_per_shard', 2)
  kwargs.setdefault('num_processes', 1)
  summary = writer.prepare(config.data, out, **kwargs)
  assert summary['complete'], summary
  prepared = config.copy_and_resolve_references()
  prepared.data.prepared = out
  return prepared


def _take(iterator, n: int) -> list[dict]:
  return [next(iterator) for _ in range(n)]


def _assert_same(case, expected: list[dict], actual: list[dict]):
  case.assertLen(actual, len(expected))
  for want, got in zip(expected, actual):
    case.assertEqual(sorted(want), sorted(got))
    for key in want:
      case.assertEqual(want[key].dtype, got[key].dtype)
      np.testing.assert_array_equal(want[key], got[key])


def _train(config, **kwargs):
  kwargs.setdefault('process_index', 0)
  kwargs.setdefault('process_count', 1)
  return input_pipeline.create_train_iterator(config, **kwargs)


class SameBatchesTest(parameterized.TestCase):

  @parameterized.parameters(*LAYOUTS)
  def test_prepared_batches_equal_folder_batches(self, name):
    tmp = _tmpdir(self)
    config = _tree(name, os.path.join(tmp, 'tree'))
    prepared = _prepared(config, os.path.join(tmp, 'prepared'))
    steps = 7  # Over two epochs of the 5 (LVIS: 3) training pairs.
    folder = _take(_train(config), steps)
    _assert_same(self, folder, _take(_train(prepared), steps))
    # Two processes: each reads its half of every global batch.
    for index in range(2):
      config.train.batch_size = prepared.train.batch_size = 4
      want = _take(_train(config, process_index=index, process_count=2), 3)
      got = _take(_train(prepared, process_index=index, process_count=2), 3)
      _assert_same(self, want, got)
    # Evaluation reads the val split at the image size.
    want = list(input_pipeline.create_eval_iterator(
        config, process_index=0, process_count=1))
    got = list(input_pipeline.create_eval_iterator(
        prepared, process_index=0, process_count=1))
    _assert_same(self, want, got)

  @parameterized.parameters('ade20k', 'lvis')
  def test_without_root_only_the_prepared_folder_is_read(self, name):
    tmp = _tmpdir(self)
    config = _tree(name, os.path.join(tmp, 'tree'))
    prepared = _prepared(config, os.path.join(tmp, 'prepared'))
    folder = _take(_train(config), 3)
    shutil.rmtree(config.data.root)
    prepared.data.root = ''
    _assert_same(self, folder, _take(_train(prepared), 3))

  def test_resume_from_iterator_state_gives_the_same_batches(self):
    tmp = _tmpdir(self)
    config = _tree('ade20k', os.path.join(tmp, 'tree'))
    prepared = _prepared(config, os.path.join(tmp, 'prepared'))
    folder = _take(_train(config), 8)
    it = _train(prepared)
    _take(it, 3)
    state = it.get_state()
    resumed = _train(prepared)
    resumed.set_state(state)
    _assert_same(self, folder[3:], _take(resumed, 5))

  def test_worker_processes_give_the_same_batches(self):
    tmp = _tmpdir(self)
    config = _tree('coco_stuff', os.path.join(tmp, 'tree'))
    prepared = _prepared(config, os.path.join(tmp, 'prepared'))
    folder = _take(_train(config), 6)
    for workers in (1, 2):
      prepared.data.num_workers = workers
      it = _train(prepared)
      try:
        _assert_same(self, folder[:3], _take(it, 3))
        state = it.get_state()
      finally:
        input_pipeline.close_iterator(it)
      resumed = _train(prepared)
      try:
        resumed.set_state(state)
        _assert_same(self, folder[3:], _take(resumed, 3))
      finally:
        input_pipeline.close_iterator(resumed)

  def test_hosts_sharing_the_work_write_the_same_folder(self):
    tmp = _tmpdir(self)
    config = _tree('ade20k', os.path.join(tmp, 'tree'))
    one = os.path.join(tmp, 'one')
    _prepared(config, one)
    shared = os.path.join(tmp, 'shared')
    first = writer.prepare(config.data, shared, records_per_shard=2,
                           num_processes=1, host_index=0, host_count=2)
    self.assertFalse(first['complete'])
    self.assertFalse(os.path.exists(os.path.join(shared, 'prepared.json')))
    second = writer.prepare(config.data, shared, records_per_shard=2,
                            num_processes=2, host_index=1, host_count=2)
    self.assertTrue(second['complete'])
    self.assertEqual(_manifest(one), _manifest(shared))


def _manifest(folder: str) -> dict:
  with open(os.path.join(folder, 'prepared.json')) as f:
    return json.load(f)


class TrainingTest(absltest.TestCase):

  def test_training_from_the_prepared_folder_equals_the_folder_route(self):
    tmp = _tmpdir(self)
    root = os.path.join(tmp, 'tree')
    testing.write_tree('folder', root, counts={'train': 4, 'val': 2},
                       hw=(36, 40), num_classes=4)
    config = tiny.get_config()
    config.data.update(name='folder', root=root, load_size=36)
    config.train.num_steps = 2
    config.train.batch_size = config.eval.batch_size = 2
    prepared = _prepared(config, os.path.join(tmp, 'prepared'))
    states = [jax.device_get(train.train_and_evaluate(
        c, os.path.join(tmp, name), num_devices=1))
              for name, c in (('folder', config), ('prepared', prepared))]
    self.assertEqual(int(states[1].step), 2)
    for a, b in zip(*map(jax.tree.leaves, states), strict=True):
      np.testing.assert_array_equal(a, b)


class RefusalTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    tmp = _tmpdir(self)
    self.root = os.path.join(tmp, 'tree')
    self.out = os.path.join(tmp, 'prepared')
    self.config = _tree('ade20k', self.root)
    self.prepared = _prepared(self.config, self.out)

  def _assert_one_line_error(self, config, pattern, split='train'):
    with self.assertRaisesRegex(data_pipelines.DataError, pattern) as ctx:
      data_pipelines.make_source(config.data, split)
    self.assertNotIn('\n', str(ctx.exception))

  def _shard(self, k=1) -> str:
    return os.path.join(self.out, 'train',
                        f'shard-{k:05d}-of-00003.array_record')

  def test_another_recipe_names_the_key_and_both_values(self):
    self.prepared.data.load_size = 24
    self._assert_one_line_error(
        self.prepared, r'recipe\.train_hw=\[20, 20\]; this config: '
        r'\[24, 24\]')

  def test_another_data_set_convention_is_refused(self):
    self.prepared.data.name = 'coco_stuff'
    self.prepared.data.num_classes = 183
    self._assert_one_line_error(self.prepared, r"recipe\.dataset='ade20k'")

  def test_missing_folder_is_refused_by_the_source_and_the_config(self):
    self.prepared.data.prepared = os.path.join(self.out, 'nowhere')
    self._assert_one_line_error(self.prepared, 'nowhere: folder not found')
    with self.assertRaisesRegex(config_validation.ConfigError,
                                'config.data.prepared=.*nowhere'):
      config_validation.validate(self.prepared)

  def test_source_tree_changed_since_preparing_is_refused(self):
    made = _manifest(self.out)['splits']['train']['fingerprint']['bytes']
    pairs = testing.write_tree('ade20k', self.root, counts={'train': 6})
    now = sum(os.path.getsize(p) for w in pairs['train']
              for p in (w.image_path, w.label_path))
    self.assertNotEqual(made, now)
    self._assert_one_line_error(
        self.prepared, rf'fingerprint\.bytes={made}; the train files under '
        rf'config.data.root now: {now}\.')

  def test_unfinished_preparation_is_refused(self):
    os.remove(os.path.join(self.out, 'prepared.json'))
    self._assert_one_line_error(self.prepared, 'did not finish')

  def test_truncated_shard_is_one_line_naming_it(self):
    path = self._shard()
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 2)
    self._assert_one_line_error(self.prepared,
                                'shard-00001-of-00003.*truncated')

  def test_damaged_shard_is_an_error_never_data(self):
    source = data_pipelines.make_source(self.prepared.data, 'train')
    clean = [source[i] for i in range(len(source))]
    path = self._shard()
    data = bytearray(open(path, 'rb').read())
    for offset in range(0, len(data), 97):  # Same size, flipped bits.
      data[offset] ^= 0x5A
    with open(path, 'wb') as f:
      f.write(data)
    source = data_pipelines.make_source(self.prepared.data, 'train')
    failed = 0
    for i in range(len(source)):
      try:
        example = source[i]
      except data_pipelines.DataError as e:
        self.assertNotIn('\n', str(e))
        self.assertIn('prepare again', str(e))
        failed += 1
        continue
      for key in clean[i]:
        np.testing.assert_array_equal(clean[i][key], example[key])
    self.assertGreaterEqual(failed, 1)
    report = inspect_lib.scan(self.prepared.data, 'train')
    self.assertTrue(any('SHA-256' in p['problem']
                        for p in report['problems']))

  def test_rerun_with_another_recipe_into_the_same_folder_fails(self):
    self.config.data.load_size = 24
    with self.assertRaisesRegex(data_pipelines.DataError,
                                r'recipe\.train_hw=\[20, 20\]'):
      writer.prepare(self.config.data, self.out, records_per_shard=2)


class CommandTest(absltest.TestCase):

  def _command(self, root, out, *flags):
    return [sys.executable, '-m', 'data_pipelines.prepare',
            '--config=configs/ade20k.py', f'--config.data.root={root}',
            '--config.data.load_size=286', f'--out={out}',
            '--records_per_shard=1', '--num_processes=2', *flags]

  def _interrupted_then_rerun_equals_uninterrupted(self, sig):
    tmp = _tmpdir(self)
    root = os.path.join(tmp, 'tree')
    testing.write_tree('ade20k', root, counts={'train': 24, 'val': 2},
                       hw=(256, 320))
    out = os.path.join(tmp, 'interrupted')
    process, stderr = self._interrupt_after_first_shard(root, out, sig)
    self.assertFalse(os.path.exists(os.path.join(out, 'prepared.json')))
    if sig == signal.SIGINT:
      self.assertEqual(process.returncode, 130, stderr)
      self.assertIn('FATAL interrupted', stderr)
    rerun = subprocess.run(self._command(root, out), cwd=_REPO,
                           capture_output=True, text=True, timeout=300,
                           check=False)
    self.assertEqual(rerun.returncode, 0, rerun.stderr[-2000:])
    self.assertIn('26 pairs (train 24, val 2)', rerun.stdout)
    self.assertNotIn('26 shards written', rerun.stdout)
    straight = os.path.join(tmp, 'straight')
    first = subprocess.run(self._command(root, straight), cwd=_REPO,
                           capture_output=True, text=True, timeout=300,
                           check=False)
    self.assertEqual(first.returncode, 0, first.stderr[-2000:])
    self.assertIn('ETA', first.stderr)
    self.assertEqual(_manifest(straight), _manifest(out))
    for split in ('train', 'val'):
      self.assertEqual(sorted(os.listdir(os.path.join(straight, split))),
                       sorted(os.listdir(os.path.join(out, split))))

  def _interrupt_after_first_shard(self, root, out, sig):
    """Starts the command, sends sig once a shard is finished; (process,
    its stderr)."""
    # SIGINT handled as in a terminal even when the suite runs as a shell's
    # background job (which ignores SIGINT, and children inherit that).
    process = subprocess.Popen(
        self._command(root, out), cwd=_REPO, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    sidecars = []
    while time.time() < deadline and not sidecars:
      time.sleep(0.01)
      if os.path.isdir(os.path.join(out, 'train')):
        sidecars = [n for n in os.listdir(os.path.join(out, 'train'))
                    if n.endswith('.json')]
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    return process, stderr

  def test_kill_9_then_rerun_equals_an_uninterrupted_run(self):
    self._interrupted_then_rerun_equals_uninterrupted(signal.SIGKILL)

  def test_ctrl_c_then_rerun_equals_an_uninterrupted_run(self):
    self._interrupted_then_rerun_equals_uninterrupted(signal.SIGINT)

  def test_bad_data_is_one_fatal_line_naming_the_file(self):
    tmp = _tmpdir(self)
    root = os.path.join(tmp, 'tree')
    pairs = testing.write_tree('ade20k', root, counts={'train': 3, 'val': 1})
    with open(pairs['train'][1].image_path, 'wb') as f:
      f.write(b'not a jpeg')
    result = subprocess.run(self._command(root, os.path.join(tmp, 'out')),
                            cwd=_REPO, capture_output=True, text=True,
                            timeout=300, check=False)
    self.assertEqual(result.returncode, 1)
    fatal = [l for l in result.stderr.splitlines() if l.startswith('FATAL')]
    self.assertLen(fatal, 1)
    self.assertIn(pairs['train'][1].image_path, fatal[0])

  def test_inspect_reports_on_a_prepared_folder(self):
    tmp = _tmpdir(self)
    config = _tree('coco_stuff', os.path.join(tmp, 'tree'))
    out = os.path.join(tmp, 'prepared')
    _prepared(config, out)
    result = subprocess.run(
        [sys.executable, '-m', 'data_pipelines.inspect',
         '--config=configs/coco.py', f'--config.data.root={config.data.root}',
         f'--config.data.prepared={out}', '--config.data.image_size=16',
         '--config.data.load_size=20', '--split=val', '--json'],
        cwd=_REPO, capture_output=True, text=True, timeout=120, check=False)
    self.assertEqual(result.returncode, 0, result.stderr[-2000:])
    report = json.loads(result.stdout)
    self.assertEqual(report['num_examples'], 3)
    self.assertEqual(report['image_sizes'], {'16x16': 3})
    self.assertEqual(report['prepared']['recipe']['val_hw'], [16, 16])
    self.assertEqual(report['prepared']['recipe'],
                     manifest_lib.recipe(config.data,
                                         data_pipelines.get_dataset(
                                             config.data)))


if __name__ == '__main__':
  absltest.main()
