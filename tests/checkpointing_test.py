"""Tests of the Orbax checkpoints: state + iterator, retention, atomicity."""

import os
import subprocess
import sys
import textwrap

from absl.testing import absltest
from absl.testing import parameterized
import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax

from oasis_jax import checkpointing
from oasis_jax import sharding

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
        from oasis_jax import checkpointing

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


if __name__ == '__main__':
  absltest.main()
