"""Tests of the N+1 loss, class balancing and LabelMix on hand-computed cases."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from oasis_jax.training import losses


class ClassBalanceTest(absltest.TestCase):

  def test_weights_with_dontcare_and_absent_classes(self):
    # 1 image, 2x4 pixels: class 0 (dontcare) x2, class 1 x4, class 3 x2;
    # classes 2 and 4 absent.
    label = jnp.array([[[0, 1, 1, 3], [0, 1, 1, 3]]])
    w = losses.class_balance_weights(label, 5, dontcare_id=0)
    k = 2  # Classes 1 and 3 are present (dontcare excluded).
    want = np.array([[[0, 8 / (k * 4), 8 / (k * 4), 8 / (k * 2)],
                      [0, 8 / (k * 4), 8 / (k * 4), 8 / (k * 2)]]])
    np.testing.assert_allclose(w, want, rtol=1e-6)
    self.assertTrue(np.isfinite(np.asarray(w)).all())

  def test_without_dontcare_every_class_counts(self):
    label = jnp.array([[[0, 1, 1, 1]]])
    w = losses.class_balance_weights(label, 3, dontcare_id=None)
    np.testing.assert_allclose(w, [[[4 / 2, 4 / 6, 4 / 6, 4 / 6]]],
                               rtol=1e-6)

  def test_counts_span_the_whole_batch(self):
    label = jnp.array([[[1, 1]], [[2, 1]]])
    w = losses.class_balance_weights(label, 3, dontcare_id=0)
    np.testing.assert_allclose(w, [[[4 / 6, 4 / 6]], [[4 / 2, 4 / 6]]],
                               rtol=1e-6)


class NPlusOneLossTest(absltest.TestCase):

  def test_n_plus_one_loss_fake_target_is_extra_class(self):
    label = jnp.array([[[2, 0]]])
    self.assertEqual(losses.n_plus_one_targets(label, True).tolist(),
                     [[[3, 1]]])
    self.assertEqual(losses.n_plus_one_targets(label, False).tolist(),
                     [[[0, 0]]])
    logits = jnp.zeros((1, 1, 2, 4)).at[0, 0, 0, 0].set(np.log(3.0))
    # Pixel 0: p(fake) = 3/6; pixel 1: p(fake) = 1/4.
    want = -(np.log(0.5) + np.log(0.25)) / 2
    np.testing.assert_allclose(
        losses.n_plus_one_loss(logits, label, real=False), want, rtol=1e-6)

  def test_weighted_mean_counts_zero_weight_pixels(self):
    label = jnp.array([[[0, 1]]])
    logits = jnp.zeros((1, 1, 2, 3))
    w = jnp.array([[[0.0, 2.0]]])
    np.testing.assert_allclose(
        losses.n_plus_one_loss(logits, label, real=True, weights=w),
        2 * np.log(3) / 2, rtol=1e-6)

  def test_plain_loss_gradient_is_weighted_softmax_minus_one_hot(self):
    logits = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 4, 6)) * 3
    label = jax.random.randint(jax.random.PRNGKey(1), (2, 3, 4), 0, 5)
    weights = jax.random.uniform(jax.random.PRNGKey(2), (2, 3, 4))
    g = jax.grad(lambda l: losses.n_plus_one_loss(
        l, label, real=False, weights=weights))(logits)
    p = np.asarray(jax.nn.softmax(logits, -1))
    want = np.asarray(weights)[..., None] / label.size * (
        p - np.eye(6)[np.zeros(label.shape, int)])
    np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-8)


class LabelMixTest(absltest.TestCase):

  def test_mask_is_one_bit_per_class(self):
    label = jnp.array([[[0, 1, 2], [2, 2, 1]]])
    bits = jnp.array([1, 0, 1, 0])
    mask = losses.make_labelmix_mask(label, bits)
    self.assertEqual(mask.shape, (1, 2, 3, 1))
    np.testing.assert_array_equal(mask[..., 0], [[[1, 0, 1], [1, 1, 0]]])

  def test_drawn_mask_is_constant_within_each_class_under_jit(self):
    label = jax.random.randint(jax.random.PRNGKey(0), (2, 8, 8), 0, 5)
    draw = jax.jit(lambda r: losses.make_labelmix_mask(
        label, losses.draw_labelmix_bits(r, 5)))
    seen = set()
    for seed in range(8):
      mask = np.asarray(draw(jax.random.PRNGKey(seed)))[..., 0]
      for c in range(5):
        values = np.unique(mask[np.asarray(label) == c])
        self.assertLen(values, 1)
        seen.add((c, float(values[0])))
    self.assertLen(seen, 10)  # Both bits occur for every class.

  def test_labelmix_loss_value_and_gradient_through_all_outputs(self):
    mask = jnp.array([[[[1.0], [0.0]]]])
    real = jnp.ones((1, 1, 2, 2))
    fake = jnp.zeros((1, 1, 2, 2))
    mixed = jnp.full((1, 1, 2, 2), 0.5)
    # target = [1, 0] per pixel: squared errors 0.25 everywhere.
    np.testing.assert_allclose(
        losses.labelmix_loss(mask, real, fake, mixed), 0.25)
    grads = jax.grad(lambda r, f, m: losses.labelmix_loss(mask, r, f, m),
                     argnums=(0, 1, 2))(real, fake, mixed)
    for g in grads:
      self.assertGreater(float(jnp.abs(g).sum()), 0)
    np.testing.assert_array_equal(
        losses.labelmix_images(mask, real[..., :1] * 2, fake[..., :1]),
        [[[[2.0], [0.0]]]])


if __name__ == '__main__':
  absltest.main()
