"""Tests of noise.py: the one noise scheme of evaluation and inference."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from oasis_jax.inference import noise


class NoiseTest(absltest.TestCase):

  def test_noise_depends_on_seed_stream_and_index_only(self):
    n5 = noise.noise(7, 5, 4)
    np.testing.assert_array_equal(noise.noise(7, 3, 4), n5[:3])
    np.testing.assert_array_equal(noise.noise(7, 2, 4, offset=3), n5[3:])
    assert not np.allclose(noise.noise(7, 5, 4, stream=1), n5)
    assert not np.allclose(noise.noise(8, 5, 4), n5)
    assert 0.5 < n5.std() < 1.5

  def test_traced_ids_give_the_host_noise(self):
    """Evaluation (ids inside jit) and inference (host) share the scheme."""
    ids = jnp.array([3, 0, 2], jnp.int32)
    traced = jax.jit(lambda i: noise.noise_for_ids(7, 0xF1D, i, 4))(ids)
    host = noise.noise(7, 4, 4, stream=0xF1D)
    np.testing.assert_allclose(np.asarray(traced), host[[3, 0, 2]],
                               rtol=1e-6)

  def test_region_mask_of_ids_and_of_a_mask(self):
    label = np.array([[0, 1], [2, 1]])
    np.testing.assert_array_equal(noise.region_mask(label, 1),
                                  [[False, True], [False, True]])
    np.testing.assert_array_equal(noise.region_mask(label, {0, 2}),
                                  [[True, False], [True, False]])
    mask = np.array([[True, False], [False, False]])
    np.testing.assert_array_equal(noise.region_mask(label[None], mask),
                                  mask[None])
    with self.assertRaisesRegex(ValueError, 'boolean mask or class ids'):
      noise.region_mask(label, [1.5])

  def test_edit_noise_replaces_the_region_only(self):
    z, new = np.zeros((1, 2)), np.ones((1, 2))
    mask = np.array([[[True, False]]])
    out = noise.edit_noise(z, mask, new)
    self.assertEqual(out.shape, (1, 1, 2, 2))
    np.testing.assert_array_equal(out[0, 0], [[1, 1], [0, 0]])

  def test_interpolate_noise_slerp_and_linear(self):
    z0, z1 = np.array([3.0, 0.0]), np.array([0.0, 3.0])
    slerp = noise.interpolate_noise(z0, z1, 3)
    np.testing.assert_allclose(np.linalg.norm(slerp, axis=-1), 3.0, rtol=1e-6)
    np.testing.assert_allclose(slerp[1], [3 / np.sqrt(2)] * 2, rtol=1e-6)
    linear = noise.interpolate_noise(z0, z1, 3, method='linear')
    np.testing.assert_allclose(linear[1], [1.5, 1.5])
    np.testing.assert_allclose(noise.interpolate_noise(z0, z0, 4), [z0] * 4)


if __name__ == '__main__':
  absltest.main()
