"""Tests of oasis_jax.training.input_pipeline: Grain train/eval iterators."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

from absl.testing import absltest
from absl.testing import parameterized
import grain
import numpy as np
import orbax.checkpoint as ocp

import data_pipelines
from data_pipelines import geometry
from data_pipelines import cityscapes
from data_pipelines import testing
from data_pipelines import transforms
from oasis_jax.training import input_pipeline

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _id_tree(root: str, count: int, hw=(20, 24), val: int = 5):
  """A 'folder' data set whose example i is uniformly class i (colour i)."""

  def label_fn(i, split):
    return np.full(hw, i if split == 'train' else i + 20, np.uint8)

  def image_fn(i, split, raw):
    del i, split
    return np.stack([raw * 5, 255 - raw * 5, raw * 2], -1).astype(np.uint8)

  testing.write_tree('folder', root, counts={'train': count, 'val': val},
                     hw=hw, label_fn=label_fn, image_fn=image_fn)


def _config(root, batch_size=4, **data):
  data.setdefault('num_classes', 32)
  data.setdefault('image_size', 16)
  data.setdefault('load_size', 18)
  config = testing.make_config('folder', root, **data)
  config.train.batch_size = batch_size
  config.eval.batch_size = batch_size
  return config


def _ids(batch):
  """Example ids of a batch of the `_id_tree` data set."""
  ids = batch['label'][:, 0, 0]
  assert (batch['label'] == ids[:, None, None]).all()
  return ids.tolist()


def _take(it, n):
  return [{k: np.array(v) for k, v in next(it).items()} for _ in range(n)]


def _assert_batches_equal(test, a, b):
  test.assertEqual(len(a), len(b))
  for x, y in zip(a, b):
    test.assertEqual(sorted(x), sorted(y))
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


class InputPipelineTest(parameterized.TestCase):

  def tmpdir(self) -> str:
    path = tempfile.mkdtemp(prefix='oasis_input_test_')
    self.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path

  def setUp(self):
    super().setUp()
    self.root = self.tmpdir()
    _id_tree(self.root, 8)

  def test_image_hw(self):
    config = _config(self.root)
    self.assertEqual(geometry.image_hw(config.data), (16, 16))
    config.data.update(cityscapes.RECIPE)
    self.assertEqual(geometry.image_hw(config.data), (256, 512))

  def test_train_batches_shapes_and_dtypes(self):
    config = _config(self.root, batch_size=4)
    it = input_pipeline.create_train_iterator(config, process_index=0,
                                              process_count=1)
    batch = next(it)
    self.assertEqual(set(batch), {'image', 'label'})
    self.assertEqual(batch['image'].shape, (4, 16, 16, 3))
    self.assertEqual(batch['image'].dtype, np.uint8)
    self.assertEqual(batch['label'].shape, (4, 16, 16))
    self.assertEqual(batch['label'].dtype, np.int32)
    it = input_pipeline.create_train_iterator(config, process_index=1,
                                              process_count=2)
    self.assertEqual(next(it)['image'].shape, (2, 16, 16, 3))

  def test_batch_size_not_divisible_by_processes(self):
    config = _config(self.root, batch_size=6)
    with self.assertRaisesRegex(
        ValueError, r'batch_size=6 is not divisible by process_count=4'):
      input_pipeline.create_train_iterator(config, process_index=0,
                                           process_count=4)

  def test_epochs_cover_the_split_with_a_new_order_each(self):
    config = _config(self.root, batch_size=4)
    it = input_pipeline.create_train_iterator(config, process_index=0,
                                              process_count=1)
    ids = [_ids(b) for b in _take(it, 6)]
    epochs = [sum(ids[2 * e:2 * e + 2], []) for e in range(3)]
    for epoch in epochs:
      self.assertEqual(sorted(epoch), list(range(8)))
    self.assertNotEqual(epochs[0], epochs[1])
    self.assertEqual(input_pipeline.epoch_at_step(config, 6), 3.0)

  def test_order_is_deterministic_by_seed(self):
    config = _config(self.root, batch_size=4)
    runs = {}
    for name, seed in (('a', 1), ('b', 1), ('c', 2)):
      it = input_pipeline.create_train_iterator(
          config, seed=seed, process_index=0, process_count=1)
      runs[name] = _take(it, 4)
    _assert_batches_equal(self, runs['a'], runs['b'])
    self.assertNotEqual([_ids(b) for b in runs['a']],
                        [_ids(b) for b in runs['c']])
    config.seed = 1  # The default seed is config.seed.
    it = input_pipeline.create_train_iterator(config, process_index=0,
                                              process_count=1)
    _assert_batches_equal(self, runs['a'], _take(it, 4))

  def test_processes_split_the_global_batches(self):
    config = _config(self.root, batch_size=4)
    single = _take(input_pipeline.create_train_iterator(
        config, process_index=0, process_count=1), 4)
    shards = [_take(input_pipeline.create_train_iterator(
        config, process_index=p, process_count=2), 4) for p in range(2)]
    for step in range(4):
      # Process p holds rows [2p, 2p + 2) of each global batch, in order.
      for p in range(2):
        for key in ('image', 'label'):
          np.testing.assert_array_equal(shards[p][step][key],
                                        single[step][key][2 * p:2 * p + 2])
      first_epoch = sum((_ids(shards[p][s]) for p in range(2)
                         for s in range(2)), [])
      self.assertEqual(sorted(first_epoch), list(range(8)))

  def test_workers_and_exact_resume_through_orbax(self):
    config = _config(self.root, batch_size=2)
    reference = _take(input_pipeline.create_train_iterator(
        config, process_index=0, process_count=1), 6)
    config.data.num_workers = 2
    it = input_pipeline.create_train_iterator(config, process_index=0,
                                              process_count=1)
    first = _take(it, 3)
    _assert_batches_equal(self, first, reference[:3])
    directory = os.path.join(self.tmpdir(), 'checkpoints')
    manager = ocp.CheckpointManager(directory)
    manager.save(3, args=ocp.args.Composite(
        data_iter=grain.checkpoint.CheckpointSave(it)))
    manager.wait_until_finished()
    next(it)  # The saved run goes on; the restore must not see this.
    it.close()
    fresh = input_pipeline.create_train_iterator(config, process_index=0,
                                                 process_count=1)
    restored = manager.restore(3, args=ocp.args.Composite(
        data_iter=grain.checkpoint.CheckpointRestore(fresh)))
    _assert_batches_equal(self, _take(restored['data_iter'], 3),
                          reference[3:])
    fresh.close()
    manager.close()

  def test_state_resume_without_workers(self):
    config = _config(self.root, batch_size=4)
    it = input_pipeline.create_train_iterator(config, process_index=0,
                                              process_count=1)
    reference = _take(it, 5)
    it = input_pipeline.create_train_iterator(config, process_index=0,
                                              process_count=1)
    _take(it, 3)
    state = json.loads(json.dumps(it.get_state()))
    fresh = input_pipeline.create_train_iterator(config, process_index=0,
                                                 process_count=1)
    fresh.set_state(state)
    _assert_batches_equal(self, _take(fresh, 2), reference[3:])

  def test_bad_example_during_iteration_names_the_file_in_a_worker(self):
    config = _config(self.root, batch_size=8, num_workers=1)
    bad = os.path.join(self.root, 'images', 'train', 'photo_0005.png')
    with open(bad, 'rb') as f:
      data = f.read()
    with open(bad, 'wb') as f:
      f.write(data[:len(data) // 2])
    it = input_pipeline.create_train_iterator(config, process_index=0,
                                              process_count=1)
    with self.assertRaises(data_pipelines.DataError) as cm:
      next(it)
    it.close()
    self.assertIn(bad, str(cm.exception))
    self.assertIn('truncated', str(cm.exception))

  def test_unpaired_files_fail_before_the_first_batch(self):
    os.remove(os.path.join(self.root, 'labels', 'train', 'photo_0002.png'))
    with self.assertRaisesRegex(data_pipelines.DataError,
                                r'photo_0002.png: image without a label'):
      input_pipeline.create_train_iterator(_config(self.root),
                                           process_index=0, process_count=1)

  def test_eval_pads_the_last_batch_and_marks_it(self):
    config = _config(self.root, batch_size=4, load_size=40)
    batches = list(input_pipeline.create_eval_iterator(
        config, process_index=0, process_count=1))
    self.assertLen(batches, 2)
    self.assertEqual(set(batches[0]), {'image', 'label', 'valid', 'index'})
    np.testing.assert_array_equal(batches[0]['index'], [0, 1, 2, 3])
    np.testing.assert_array_equal(batches[1]['index'], [4, -1, -1, -1])
    np.testing.assert_array_equal(batches[1]['valid'],
                                  [True, False, False, False])
    self.assertEqual(batches[1]['valid'].dtype, np.bool_)
    self.assertEqual(batches[1]['index'].dtype, np.int32)
    self.assertEqual(batches[0]['image'].shape, (4, 16, 16, 3))
    self.assertEqual(batches[0]['label'].dtype, np.int32)
    # A fixed resize, no augmentation; val example i is class 20 + i.
    source = data_pipelines.make_source(config.data, 'val')
    expected = transforms.ResizeToImageSize((16, 16))(source[2])
    np.testing.assert_array_equal(batches[0]['image'][2], expected['image'])
    np.testing.assert_array_equal(batches[0]['label'][2], expected['label'])
    self.assertEqual(_ids({'label': batches[0]['label'][:1]}), [20])
    again = list(input_pipeline.create_eval_iterator(
        config, process_index=0, process_count=1))
    _assert_batches_equal(self, batches, again)

  def test_eval_shards_are_disjoint_and_cover_the_split(self):
    config = _config(self.root, batch_size=4)
    shards = [list(input_pipeline.create_eval_iterator(
        config, split='train', process_index=p, process_count=2,
        num_examples=7)) for p in range(2)]
    self.assertEqual(len(shards[0]), len(shards[1]))
    seen = []
    for p in range(2):
      for batch in shards[p]:
        self.assertEqual(batch['image'].shape[0], 2)
        valid = batch['index'][batch['valid']].tolist()
        self.assertEqual(valid, _ids({'label': batch['label'][
            batch['valid']]}))
        seen += valid
    self.assertCountEqual(seen, range(7))

  def test_cityscapes_is_resized_without_crop(self):
    root = self.tmpdir()
    testing.write_tree('cityscapes', root, counts={'train': 2, 'val': 1},
                       hw=(32, 64))
    config = testing.make_config('cityscapes', root, image_size=32,
                                 aspect_ratio=2.0, load_size=32,
                                 random_crop=False, random_flip=False)
    config.train.batch_size = 2
    batch = next(input_pipeline.create_train_iterator(
        config, process_index=0, process_count=1))
    self.assertEqual(batch['image'].shape, (2, 16, 32, 3))
    source = data_pipelines.make_source(config.data, 'train')
    expected = sorted(
        (transforms.resize_label(source[i]['label'], (16, 32)).tobytes()
         for i in range(2)))
    self.assertEqual(sorted(x.tobytes() for x in batch['label']), expected)

  def test_synthetic_through_the_same_interface(self):
    config = testing.make_config('synthetic', '', num_classes=6,
                                 image_size=32, synthetic_num_examples=10)
    config.train.batch_size = 4
    config.eval.batch_size = 4
    batch = next(input_pipeline.create_train_iterator(
        config, process_index=0, process_count=1))
    self.assertEqual(batch['image'].shape, (4, 32, 32, 3))
    self.assertEqual(batch['label'].dtype, np.int32)
    self.assertLess(batch['label'].max(), 6)
    batches = list(input_pipeline.create_eval_iterator(
        config, process_index=0, process_count=1))
    self.assertEqual([b['index'].tolist() for b in batches],
                     [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, -1, -1]])
    self.assertEqual(input_pipeline.num_examples(config, 'val'), 10)

  def test_tfds_route_gives_the_same_batches(self):
    config = _config(self.root, batch_size=4)
    folder = _take(input_pipeline.create_train_iterator(
        config, process_index=0, process_count=1), 3)
    config.data.source = 'tfds'
    config.data.tfds_data_dir = os.path.join(self.tmpdir(), 'tfds')
    tfds_batches = _take(input_pipeline.create_train_iterator(
        config, process_index=0, process_count=1), 3)
    _assert_batches_equal(self, folder, tfds_batches)
    self.assertEqual(input_pipeline.num_examples(config, 'train'), 8)


_WORKER = textwrap.dedent("""
    import json, os, sys
    os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=1'
    sys.path.insert(0, {repo!r})
    import jax
    jax.distributed.initialize('127.0.0.1:{port}', num_processes=2,
                               process_id=int(sys.argv[1]))
    from data_pipelines import testing
    from oasis_jax.training import input_pipeline
    config = testing.make_config('folder', {root!r}, num_classes=32,
                                 image_size=16, load_size=18)
    config.train.batch_size = 4
    config.eval.batch_size = 4
    it = input_pipeline.create_train_iterator(config)
    train = [next(it)['label'][:, 0, 0].tolist() for _ in range(2)]
    evals = [(b['index'][b['valid']].tolist(), b['label'][:, 0, 0].tolist())
             for b in input_pipeline.create_eval_iterator(config,
                                                          split='train')]
    print('RESULT' + json.dumps({{'process': jax.process_index(),
                                 'count': jax.process_count(),
                                 'train': train, 'eval': evals}}))
    jax.distributed.shutdown()
""")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


class MultiProcessTest(absltest.TestCase):

  def test_two_processes_read_disjoint_shards_covering_the_split(self):
    root = tempfile.mkdtemp(prefix='oasis_input_mp_')
    self.addCleanup(shutil.rmtree, root, ignore_errors=True)
    _id_tree(root, 8)
    script = _WORKER.format(repo=_REPO, port=_free_port(), root=root)
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    procs = [subprocess.Popen([sys.executable, '-c', script, str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for i in range(2)]
    results = {}
    for proc in procs:
      out, err = proc.communicate(timeout=120)
      self.assertEqual(proc.returncode, 0, err[-3000:])
      line = [l for l in out.splitlines() if l.startswith('RESULT')][0]
      result = json.loads(line[len('RESULT'):])
      results[result['process']] = result
    self.assertEqual(sorted(results), [0, 1])
    self.assertEqual({r['count'] for r in results.values()}, {2})
    # Training: the first epoch (2 global batches of 4) is the split, once.
    train = [results[p]['train'] for p in range(2)]
    for p in range(2):
      self.assertEqual([len(b) for b in train[p]], [2, 2])
    first_epoch = sum(train[0] + train[1], [])
    self.assertEqual(sorted(first_epoch), list(range(8)))
    # Eval: disjoint shards whose union is the split, same batch count.
    shards = [sum((ids for ids, _ in results[p]['eval']), [])
              for p in range(2)]
    self.assertEqual(len(results[0]['eval']), len(results[1]['eval']))
    self.assertEqual(set(shards[0]) & set(shards[1]), set())
    self.assertEqual(sorted(shards[0] + shards[1]), list(range(8)))


def _children(pid: int) -> list[int]:
  """The pids of the live descendants of `pid` (from /proc)."""
  parents = {}
  for name in os.listdir('/proc'):
    if name.isdigit():
      try:
        with open(f'/proc/{name}/stat') as f:
          fields = f.read().rsplit(')', 1)[1].split()
      except OSError:
        continue
      if fields[0] != 'Z':  # Zombies are dead.
        parents[int(name)] = int(fields[1])
  found, todo = [], [pid]
  while todo:
    parent = todo.pop()
    kids = [p for p, pp in parents.items() if pp == parent]
    found.extend(kids)
    todo.extend(kids)
  return found


def _alive(pid: int) -> bool:
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
  except OSError:
    return False


class WorkerCleanupTest(absltest.TestCase):

  def test_no_orphan_workers_after_kill_9_of_the_parent(self):
    script = textwrap.dedent("""
        import sys, time
        from absl import flags
        from configs import tiny
        from oasis_jax.training import input_pipeline
        flags.FLAGS.mark_as_parsed()
        config = tiny.get_config()
        config.data.num_workers = 2
        it = input_pipeline.create_train_iterator(config)
        next(it)
        print('READY', flush=True)
        time.sleep(600)
        """)
    proc = subprocess.Popen(
        [sys.executable, '-c', script], cwd=_REPO, stdout=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=_REPO), text=True)
    try:
      self.assertEqual(proc.stdout.readline().strip(), 'READY')
      workers = _children(proc.pid)
      self.assertGreaterEqual(len(workers), 2, workers)
      proc.send_signal(signal.SIGKILL)
      proc.wait(timeout=30)
      deadline = time.monotonic() + 10
      while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
      self.assertEqual([p for p in workers if _alive(p)], [])
    finally:
      proc.kill()
      proc.wait()
      for pid in _children(proc.pid):
        os.kill(pid, signal.SIGKILL)


if __name__ == '__main__':
  absltest.main()
