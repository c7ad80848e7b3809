"""Tests of the device mesh and the batch / state shardings."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
from jax.sharding import PartitionSpec as P
import numpy as np

from oasis_jax.runtime import sharding


class ShardingTest(parameterized.TestCase):

  def test_make_mesh_uses_all_devices_by_default(self):
    mesh = sharding.make_mesh()
    self.assertEqual(mesh.axis_names, ('data',))
    self.assertEqual(mesh.devices.size, jax.device_count())
    self.assertEqual(jax.device_count(), 8)  # conftest's fake devices.

  @parameterized.parameters(1, 2, 4)
  def test_make_mesh_takes_the_first_devices(self, n):
    mesh = sharding.make_mesh(n)
    self.assertEqual(list(mesh.devices.flat), jax.devices()[:n])

  @parameterized.parameters(0, 9)
  def test_make_mesh_rejects_impossible_counts(self, n):
    with self.assertRaisesRegex(ValueError, 'num_devices'):
      sharding.make_mesh(n)

  def test_global_batch_splits_the_batch_over_devices(self):
    mesh = sharding.make_mesh(4)
    local = {'image': np.arange(8 * 2 * 3, dtype=np.uint8).reshape(8, 2, 3),
             'label': np.arange(8, dtype=np.int32)}
    batch = sharding.global_batch(local, mesh)
    self.assertEqual(batch['image'].shape, (8, 2, 3))
    self.assertEqual(batch['label'].sharding.spec, P('data'))
    shards = batch['label'].addressable_shards
    self.assertLen(shards, 4)
    self.assertEqual([s.data.tolist() for s in shards],
                     [[0, 1], [2, 3], [4, 5], [6, 7]])
    np.testing.assert_array_equal(batch['image'], local['image'])

  def test_put_replicated_copies_to_every_device(self):
    mesh = sharding.make_mesh(4)
    tree = sharding.put_replicated({'a': np.arange(3.0)}, mesh)
    self.assertTrue(tree['a'].sharding.is_fully_replicated)
    self.assertLen(tree['a'].addressable_shards, 4)
    np.testing.assert_array_equal(tree['a'], np.arange(3.0))

  def test_batch_that_does_not_divide_is_an_error_naming_the_counts(self):
    mesh = sharding.make_mesh(8)
    sharding.check_batch_size(16, mesh)
    with self.assertRaisesRegex(
        ValueError, r'config.train.batch_size=12 \(the global batch\) does '
        r'not divide by the 8 devices'):
      sharding.check_batch_size(12, mesh)


if __name__ == '__main__':
  absltest.main()
