"""Tests of the Orbax checkpoints: state + iterator, retention, atomicity."""

import errno
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

from absl.testing import absltest
from absl.testing import parameterized
import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
from orbax.checkpoint._src.path import atomicity

from configs import tiny
from oasis_jax.training import checkpointing
from oasis_jax.runtime import sharding
from oasis_jax.training import train_state

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _state(value: float):
  """A small train-state-like tree: params, an Adam state, step, raw key."""
  params = {'w': jnp.full((4, 2), value), 'b': jnp.arange(3.0) * value}
  return {'params': params, 'opt': optax.adam(1e-3).init(params),
          'step': jnp.asarray(int(value), jnp.int32),
          'rng': jax.random.PRNGKey(int(value))}


def _iterator():
  dataset = grain.MapDataset.range(100).seed(3).shuffle().batch(4)
  return iter(dataset.to_iter_dataset())


def _put(tree, mesh):
  return jax.device_put(tree, sharding.replicated(mesh))


class CheckpointingTest(parameterized.TestCase):

  def test_restore_gives_state_iterator_and_target_shardings(self):
    workdir = self.create_tempdir().full_path
    mesh = sharding.make_mesh(2)
    state, data_iter = _put(_state(1.0), mesh), _iterator()
    next(data_iter)
    manager = checkpointing.create_manager(workdir)
    checkpointing.save(manager, 1, state, data_iter)
    expected_batches = [next(data_iter) for _ in range(3)]
    manager.wait_until_finished()

    abstract = jax.eval_shape(lambda: _state(0.0))
    fresh_iter = _iterator()
    restored, step = checkpointing.restore_or_init(
        checkpointing.create_manager(workdir), abstract,
        sharding.state_sharding(mesh, abstract), lambda: None, fresh_iter)
    self.assertEqual(step, 1)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state),
                    strict=True):
      np.testing.assert_array_equal(a, b)
      self.assertEqual(a.sharding, sharding.replicated(mesh))
    # The optax state keeps its type (restored against the target).
    self.assertIsInstance(restored['opt'][0], optax.ScaleByAdamState)
    for expected in expected_batches:
      np.testing.assert_array_equal(next(fresh_iter), expected)

  def test_restore_or_init_initializes_an_empty_folder(self):
    manager = checkpointing.create_manager(self.create_tempdir().full_path)
    state, step = checkpointing.restore_or_init(
        manager, None, None, lambda: 'fresh')
    self.assertEqual((state, step), ('fresh', None))

  def test_only_the_last_checkpoints_are_kept(self):
    manager = checkpointing.create_manager(self.create_tempdir().full_path,
                                           max_to_keep=2)
    for step in (1, 2, 3):
      checkpointing.save(manager, step, _state(float(step)))
    manager.wait_until_finished()
    self.assertEqual(manager.all_steps(), [2, 3])

  def test_best_manager_keeps_the_lowest_metric(self):
    manager = checkpointing.create_best_manager(
        self.create_tempdir().full_path, metric='fid', mode='min')
    kept = [checkpointing.save_best(manager, step, _state(float(step)),
                                    {'fid': fid})
            for step, fid in ((1, 30.0), (2, 20.0), (3, 25.0))]
    self.assertEqual(kept, [True, True, False])
    self.assertEqual(manager.all_steps(), [2])

  def test_run_killed_while_saving_leaves_previous_checkpoint_usable(self):
    """A process dies inside the second save, before Orbax commits it."""
    workdir = self.create_tempdir().full_path
    script = textwrap.dedent(f"""
        import os
        import jax.numpy as jnp
        from orbax.checkpoint._src.path import atomicity
        from oasis_jax.training import checkpointing

        def die(*args, **kwargs):
          os._exit(17)

        manager = checkpointing.create_manager({workdir!r})
        checkpointing.save(manager, 1, {{'w': jnp.ones(8)}})
        manager.wait_until_finished()
        atomicity.AtomicRenameTemporaryPath.finalize = die
        checkpointing.save(manager, 2, {{'w': jnp.full(8, 2.0)}})
        manager.wait_until_finished()
        """)
    env = dict(os.environ, XLA_FLAGS='', PYTHONPATH=_REPO)
    result = subprocess.run([sys.executable, '-c', script], env=env,
                            capture_output=True, text=True, check=False,
                            timeout=120)
    self.assertEqual(result.returncode, 17, result.stderr[-2000:])
    folder = os.path.join(workdir, checkpointing.CHECKPOINT_DIR)
    self.assertTrue(any('tmp' in name for name in os.listdir(folder)),
                    os.listdir(folder))

    manager = checkpointing.create_manager(workdir)
    self.assertEqual(manager.latest_step(), 1)
    abstract = {'w': jax.ShapeDtypeStruct((8,), jnp.float32)}
    mesh = sharding.make_mesh(1)
    restored = checkpointing.restore(manager, 1, abstract,
                                     sharding.state_sharding(mesh, abstract))
    np.testing.assert_array_equal(restored['w'], np.ones(8))
    # The next save at step 2 succeeds where the killed one failed.
    checkpointing.save(manager, 2, {'w': jnp.full(8, 2.0)})
    manager.wait_until_finished()
    self.assertEqual(manager.all_steps(), [1, 2])


def _fake_train_state(config, seed: int):
  """A TrainState of the config's structure, random, without compiling."""
  rng = np.random.default_rng(seed)
  fill = lambda s: (rng.standard_normal(s.shape).astype(s.dtype)
                    if np.issubdtype(s.dtype, np.floating)
                    else np.zeros(s.shape, s.dtype))
  return jax.tree.map(fill, train_state.abstract_train_state(config))


def _tree_equal(a, b) -> bool:
  return all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))


class WorkdirReadingTest(parameterized.TestCase):
  """find_checkpoint, the partial restores, the workdir's config."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.config = tiny.get_config()
    cls.workdir = tempfile.mkdtemp(prefix='workdir_reading_')
    cls.addClassCleanup(shutil.rmtree, cls.workdir, True)
    cls.states = {s: _fake_train_state(cls.config, s) for s in (2, 4)}
    manager = checkpointing.create_manager(cls.workdir)
    for step, state in cls.states.items():
      checkpointing.save(manager, step, state)
    manager.wait_until_finished()
    best = checkpointing.create_best_manager(cls.workdir, metric='fid')
    checkpointing.save_best(best, 2, cls.states[2], {'fid': 1.0})

  def test_find_checkpoint_of_latest_best_and_a_step(self):
    main = os.path.join(self.workdir, checkpointing.CHECKPOINT_DIR)
    best = os.path.join(self.workdir, checkpointing.BEST_CHECKPOINT_DIR)
    self.assertEqual(checkpointing.find_checkpoint(self.workdir), (main, 4))
    self.assertEqual(checkpointing.find_checkpoint(self.workdir, 'best'),
                     (best, 2))
    self.assertEqual(checkpointing.find_checkpoint(self.workdir, '2'),
                     (main, 2))
    with self.assertRaisesRegex(FileNotFoundError,
                                r'no checkpoint of step 3; steps: \[2, 4\]'):
      checkpointing.find_checkpoint(self.workdir, 3)
    with self.assertRaisesRegex(ValueError, "'latest', 'best' or a step"):
      checkpointing.find_checkpoint(self.workdir, 'newest')

  def test_partial_restores_read_one_network(self):
    main = os.path.join(self.workdir, checkpointing.CHECKPOINT_DIR)
    state = self.states[4]
    generator, kind = checkpointing.restore_generator(main, 4, self.config)
    self.assertEqual(kind, 'ema')
    self.assertTrue(_tree_equal(generator, dict(state.ema)))
    discriminator = checkpointing.restore_discriminator(main, 4, self.config)
    self.assertTrue(_tree_equal(discriminator, {
        'params': state.discriminator.params,
        'batch_stats': state.discriminator.batch_stats}))



def _biggest_array_file(step_dir):
  files = glob.glob(os.path.join(step_dir, 'state', 'ocdbt.process_0', 'd',
                                 '*'))
  return max(files, key=os.path.getsize)


def _truncate(step_dir):
  path = _biggest_array_file(step_dir)
  with open(path, 'rb') as f:
    data = f.read()
  with open(path, 'wb') as f:
    f.write(data[:len(data) // 2])


def _flip_bit(step_dir):
  path = _biggest_array_file(step_dir)
  with open(path, 'rb') as f:
    data = bytearray(f.read())
  data[len(data) // 2] ^= 0x10
  with open(path, 'wb') as f:
    f.write(bytes(data))


def _garbage_manifest(step_dir):
  for path in glob.glob(os.path.join(step_dir, 'state', '**',
                                     'manifest.ocdbt'), recursive=True):
    with open(path, 'wb') as f:
      f.write(b'garbage' * 10)


# Damage kind -> (what it does to a step folder, words of the warning).
_DAMAGES = {
    'truncated_array_file': (_truncate, 'does not restore'),
    'flipped_bit': (_flip_bit, 'differ from their fingerprint'),
    'garbage_manifest': (_garbage_manifest, 'DATA_LOSS'),
    'deleted_metadata': (
        lambda d: os.remove(os.path.join(d, 'state', '_METADATA')),
        'missing state/_METADATA'),
    'deleted_state': (lambda d: shutil.rmtree(os.path.join(d, 'state')),
                      'missing state/_METADATA'),
    'deleted_iterator_file': (
        lambda d: os.remove(os.path.join(d, 'data_iter',
                                         'process_0-of-1.json')),
        'missing data_iter/process_0-of-1.json'),
}


def _big_state(value: float):
  """_state with an array stored in its own file (not inlined by OCDBT)."""
  # Random values: zstd stores them raw, so a flipped bit restores wrong
  # (unnoticed but for the fingerprint) instead of failing to decode.
  big = np.random.default_rng(int(value)).random(1000).astype(np.float32)
  return {**_state(value), 'big': jnp.asarray(big)}


class FallbackRestoreTest(parameterized.TestCase):
  """restore_newest_good: damaged checkpoints are moved aside, not used."""

  def _two_checkpoints(self):
    workdir = self.create_tempdir().full_path
    manager = checkpointing.create_manager(workdir)
    data_iter = _iterator()
    checkpointing.save(manager, 2, _big_state(2.0), data_iter)
    next(data_iter)
    checkpointing.save(manager, 4, _big_state(4.0), data_iter)
    checkpointing.finish_saves(manager)
    return workdir

  def _restore(self, workdir):
    mesh = sharding.make_mesh(1)
    abstract = jax.eval_shape(lambda: _big_state(0.0))
    data_iter = _iterator()
    state, step = checkpointing.restore_newest_good(
        checkpointing.create_manager(workdir), abstract,
        sharding.state_sharding(mesh, abstract), lambda: 'fresh', data_iter)
    return state, step, data_iter

  @parameterized.named_parameters(
      *[(name, name) for name in _DAMAGES], ('empty_step_folder', 'empty'))
  def test_damaged_newest_is_moved_aside_and_previous_restored(self, damage):
    workdir = self._two_checkpoints()
    folder = os.path.join(workdir, checkpointing.CHECKPOINT_DIR)
    if damage == 'empty':
      bad_step, reason = 70, 'an empty folder'
      os.makedirs(os.path.join(folder, '70'))
      expected_step, value = 4, 4.0
    else:
      bad_step, (damage_fn, reason) = 4, _DAMAGES[damage]
      damage_fn(os.path.join(folder, '4'))
      expected_step, value = 2, 2.0
    with self.assertLogs(level='WARNING') as logs:
      state, step, data_iter = self._restore(workdir)
    self.assertEqual(step, expected_step)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(_big_state(value)),
                    strict=True):
      np.testing.assert_array_equal(a, b)
    # The iterator is at the restored checkpoint's position.
    expected_iter = _iterator()
    for _ in range(expected_step // 2 - 1):
      next(expected_iter)
    np.testing.assert_array_equal(next(data_iter), next(expected_iter))
    warnings = [line for line in logs.output if ' is damaged (' in line]
    self.assertLen(warnings, 1)
    self.assertIn(os.path.join(folder, str(bad_step)), warnings[0])
    self.assertIn(reason, warnings[0])
    self.assertNotIn('\n', warnings[0])
    damaged = os.path.join(workdir, checkpointing.DAMAGED_DIR)
    self.assertEqual(os.listdir(damaged), [str(bad_step)])  # Not deleted.
    self.assertNotIn(str(bad_step), os.listdir(folder))

  def test_no_restorable_checkpoint_is_one_error_and_no_fresh_start(self):
    workdir = self._two_checkpoints()
    folder = os.path.join(workdir, checkpointing.CHECKPOINT_DIR)
    _truncate(os.path.join(folder, '4'))
    _garbage_manifest(os.path.join(folder, '2'))
    with self.assertRaisesRegex(checkpointing.CheckpointError,
                                r'no checkpoint in .* restores'):
      self._restore(workdir)
    self.assertCountEqual(
        os.listdir(os.path.join(workdir, checkpointing.DAMAGED_DIR)),
        ['2', '4'])
    # Started again: still an error, not a silent start from scratch.
    with self.assertRaisesRegex(checkpointing.CheckpointError,
                                r'move .*checkpoints_damaged away'):
      self._restore(workdir)


class FailedSaveTest(parameterized.TestCase):

  def test_failed_save_is_one_error_naming_step_path_and_os_error(self):
    workdir = self.create_tempdir().full_path
    manager = checkpointing.create_manager(workdir)
    checkpointing.save(manager, 1, _state(1.0))
    checkpointing.finish_saves(manager)

    def disk_full(*args, **kwargs):
      del args, kwargs
      raise OSError(errno.ENOSPC, 'No space left on device')

    with absltest.mock.patch.object(atomicity.AtomicRenameTemporaryPath,
                                    'finalize', disk_full):
      checkpointing.save(manager, 2, _state(2.0))
      with self.assertRaises(checkpointing.CheckpointSaveError) as ctx:
        checkpointing.finish_saves(manager)
    folder = os.path.join(workdir, checkpointing.CHECKPOINT_DIR)
    self.assertEqual(
        str(ctx.exception),
        f'saving the checkpoint of step 2 to {folder}/2 failed: [Errno 28] '
        'No space left on device; the checkpoint of step 1 is intact.')
    self.assertEqual(os.listdir(folder), ['1'])  # No temporary folder left.
    abstract = jax.eval_shape(lambda: _state(0.0))
    mesh = sharding.make_mesh(1)
    state, step = checkpointing.restore_newest_good(
        checkpointing.create_manager(workdir), abstract,
        sharding.state_sharding(mesh, abstract), lambda: None)
    self.assertEqual(step, 1)
    np.testing.assert_array_equal(state['params']['w'], np.ones((4, 2)))


class FingerprintTest(parameterized.TestCase):

  def test_one_flipped_bit_changes_the_fingerprint(self):
    state = {'w': jnp.arange(6, dtype=jnp.float32).reshape(2, 3),
             'key': jax.random.PRNGKey(1), 'step': jnp.int32(3),
             'h': jnp.ones(3, jnp.bfloat16)}
    before = checkpointing.fingerprint(state)
    self.assertLen(before, 4)
    bits = np.asarray(state['w']).view(np.uint32).copy()
    bits[1, 2] ^= 1 << 7
    flipped = dict(state, w=jnp.asarray(bits.view(np.float32)))
    after = checkpointing.fingerprint(flipped)
    self.assertNotEqual(before[3], after[3])  # Leaves in key order: w last.
    self.assertEqual(before[:3], after[:3])
    swapped = dict(state, step=jnp.int32(4))
    self.assertNotEqual(checkpointing.fingerprint(swapped), before)


if __name__ == '__main__':
  absltest.main()
