"""Tests of ema_refresh.py: the EMA generator's BN statistics refresh."""

from absl.testing import absltest
import jax
import numpy as np

from configs import tiny
from oasis_jax.training import ema_refresh
from oasis_jax.training import train_state


def _equal(a, b) -> bool:
  return all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))


class RefreshStatisticsTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.config = tiny.get_config()  # 2 refresh batches.
    cls.variables = train_state.random_generator_variables(cls.config, seed=0)
    cls.refreshed = ema_refresh.refresh_statistics(cls.config, cls.variables,
                                                   step=4)

  def test_statistics_change_and_parameters_do_not(self):
    self.assertTrue(_equal(self.refreshed['params'],
                           self.variables['params']))
    self.assertFalse(_equal(self.refreshed['batch_stats'],
                            self.variables['batch_stats']))

  def test_same_step_same_statistics_other_step_other(self):
    again = ema_refresh.refresh_statistics(self.config, self.variables, 4)
    self.assertTrue(_equal(again, self.refreshed))
    other = ema_refresh.refresh_statistics(self.config, self.variables, 5)
    self.assertFalse(_equal(other['batch_stats'],
                            self.refreshed['batch_stats']))

  def test_zero_batches_keep_the_variables(self):
    self.assertIs(ema_refresh.refresh_statistics(
        self.config, self.variables, 4, num_batches=0), self.variables)

  def test_refresh_mesh_divides_the_batch(self):
    mesh = ema_refresh.refresh_mesh(self.config)  # Batch 4, 8 CPU devices.
    self.assertEqual(mesh.devices.size, 4)


if __name__ == '__main__':
  absltest.main()
