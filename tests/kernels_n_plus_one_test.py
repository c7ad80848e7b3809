"""Tests of kernels/n_plus_one.py against training/losses.py's plain losses."""

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from oasis_jax.kernels import n_plus_one
from oasis_jax.training import losses


class FusedLossTest(absltest.TestCase):

  def test_fused_equals_plain_on_hand_computed_case(self):
    label = jnp.array([[[2, 0]]])
    logits = jnp.zeros((1, 1, 2, 4)).at[0, 0, 0, 0].set(np.log(3.0))
    want = -(np.log(0.5) + np.log(0.25)) / 2
    for f in (n_plus_one.loss, losses.n_plus_one_loss):
      np.testing.assert_allclose(f(logits, label, real=False), want,
                                 rtol=1e-6)

  def test_gradients_are_weighted_softmax_minus_one_hot(self):
    # The custom backward pass against the closed form w/n (p - onehot),
    # and d/dweights = ce/n, for real and fake targets.
    logits = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 4, 6)) * 3
    label = jax.random.randint(jax.random.PRNGKey(1), (2, 3, 4), 0, 5)
    weights = jax.random.uniform(jax.random.PRNGKey(2), (2, 3, 4))
    for real in (True, False):
      f = lambda l, w, real=real: n_plus_one.loss(
          l, label, real=real, weights=w)
      g_logits, g_weights = jax.grad(f, argnums=(0, 1))(logits, weights)
      t = np.asarray(label) + 1 if real else np.zeros(label.shape, int)
      onehot = np.eye(6)[t]
      p = np.asarray(jax.nn.softmax(logits, -1))
      n = label.size
      want = np.asarray(weights)[..., None] / n * (p - onehot)
      np.testing.assert_allclose(g_logits, want, rtol=1e-5, atol=1e-8)
      ce = -np.log(np.sum(p * onehot, -1))
      np.testing.assert_allclose(g_weights, ce / n, rtol=1e-5)


  def test_fused_loss_equals_the_plain_loss_at_1205_logits(self):
    # LVIS's 1204 classes + fake: the fused loss (logsumexp minus the
    # logit gathered by id) against the paper's plain loss, with class
    # balancing weights, values and gradients, real and fake targets.
    logits = jax.random.normal(jax.random.PRNGKey(3), (2, 4, 5, 1205)) * 4
    label = jax.random.randint(jax.random.PRNGKey(4), (2, 4, 5), 0, 1204)
    weights = losses.class_balance_weights(label, 1204, 0)

    for real in (True, False):
      fused = lambda l, w, real=real: n_plus_one.loss(
          l, label, real=real, weights=w)
      value, grads = jax.value_and_grad(fused, argnums=(0, 1))(logits,
                                                                 weights)
      want, want_grads = jax.value_and_grad(
          lambda l, w, real=real: losses.n_plus_one_loss(
              l, label, real=real, weights=w),
          argnums=(0, 1))(logits, weights)
      np.testing.assert_allclose(value, want, rtol=1e-6)
      for got, expected in zip(grads, want_grads):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-9)

  def test_fused_loss_makes_no_logits_sized_temporaries(self):
    # XLA's buffer analysis of value_and_grad: besides the gradient (an
    # output) the fused loss needs under 5% of the logits' size in
    # temporaries; the one-hot formulation needs about two logits' worth.
    shape = (2, 16, 16, 1205)
    logits = jnp.zeros(shape)
    label = jnp.zeros(shape[:3], jnp.int32)
    weights = jnp.ones(shape[:3])

    def temp_fraction(f):
      compiled = jax.jit(jax.value_and_grad(f)).lower(logits).compile()
      analysis = compiled.memory_analysis()
      return analysis.temp_size_in_bytes / logits.nbytes

    fused = temp_fraction(lambda l: n_plus_one.loss(
        l, label, real=True, weights=weights))
    one_hot = temp_fraction(lambda l: losses.n_plus_one_loss(
        l, label, real=True, weights=weights))
    self.assertLess(fused, 0.05)
    self.assertGreater(one_hot, 1.0)

  def test_bfloat16_logits_give_the_float32_numbers(self):
    logits = (jax.random.normal(jax.random.PRNGKey(5), (2, 3, 3, 7)) *
              3).astype(jnp.bfloat16)
    label = jax.random.randint(jax.random.PRNGKey(6), (2, 3, 3), 0, 6)
    f = lambda l: n_plus_one.loss(l, label, real=True)
    value, grad = jax.value_and_grad(f)(logits)
    want, want_grad = jax.value_and_grad(f)(logits.astype(jnp.float32))
    self.assertEqual(value.dtype, jnp.float32)
    self.assertEqual(grad.dtype, jnp.bfloat16)
    np.testing.assert_allclose(value, want, rtol=1e-6)
    np.testing.assert_array_equal(grad, want_grad.astype(jnp.bfloat16))


class FusedHeadTest(absltest.TestCase):
  """The losses of a last 1x1 conv's logits computed from its inputs."""

  def setUp(self):
    super().setUp()
    keys = jax.random.split(jax.random.PRNGKey(7), 8)
    self.keys = keys
    self.features = jax.random.normal(keys[0], (2, 5, 6, 8))
    self.kernel = jax.random.normal(keys[1], (1, 1, 8, 1205)) * 0.5
    self.bias = jax.random.normal(keys[2], (1205,))
    self.label = jax.random.randint(keys[3], (2, 5, 6), 0, 1204)

  def _logits(self, x, kernel):
    return jnp.einsum('bhwf,fc->bhwc', x, kernel[0, 0],
                      precision='highest') + self.bias

  def test_n_plus_one_from_features_equals_loss_of_the_logits(self):
    weights = losses.class_balance_weights(self.label, 1204, 0)
    for real in (True, False):
      # 60 pixels in chunks of 7: the last chunk is padded.
      fused = lambda x, k, b, w, real=real: (
          n_plus_one.loss_from_features(
              x, k, b, self.label, real=real, weights=w, chunk_pixels=7))
      plain = lambda x, k, b, w, real=real: losses.n_plus_one_loss(
          jnp.einsum('bhwf,fc->bhwc', x, k[0, 0], precision='highest') + b,
          self.label, real=real, weights=w)
      args = (self.features, self.kernel, self.bias, weights)
      value, grads = jax.value_and_grad(fused, argnums=(0, 1, 2, 3))(*args)
      want, want_grads = jax.value_and_grad(plain, argnums=(0, 1, 2, 3))(
          *args)
      np.testing.assert_allclose(value, want, rtol=1e-6)
      for got, expected in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)

  def test_labelmix_from_features_equals_loss_of_the_logits(self):
    mask = (jax.random.uniform(self.keys[4], (2, 5, 6, 1)) > 0.5).astype(
        jnp.float32)
    xs = [jax.random.normal(self.keys[5 + i], (2, 5, 6, 8)) for i in range(3)]
    fused = lambda r, f, m, k: n_plus_one.labelmix_from_features(
        mask, r, f, m, k)
    plain = lambda r, f, m, k: losses.labelmix_loss(
        mask, self._logits(r, k), self._logits(f, k), self._logits(m, k))
    value, grads = jax.value_and_grad(fused, argnums=(0, 1, 2, 3))(
        *xs, self.kernel)
    want, want_grads = jax.value_and_grad(plain, argnums=(0, 1, 2, 3))(
        *xs, self.kernel)
    np.testing.assert_allclose(value, want, rtol=1e-5)
    for got, expected in zip(grads, want_grads, strict=True):
      np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)

  def test_fused_head_stores_no_logits(self):
    # XLA's buffer analysis of the gradients: the fused head's temporaries
    # are a few chunks of logits; the loss of stored logits needs them all.
    features = jnp.zeros((2, 32, 32, 8))
    label = jnp.zeros((2, 32, 32), jnp.int32)
    logits_bytes = 2 * 32 * 32 * 1205 * 4

    def temp_bytes(f):
      compiled = jax.jit(jax.grad(f, argnums=(0, 1))).lower(
          features, self.kernel).compile()
      return compiled.memory_analysis().temp_size_in_bytes

    fused = temp_bytes(lambda x, k: n_plus_one.loss_from_features(
        x, k, self.bias, label, real=True, chunk_pixels=256))
    plain = temp_bytes(lambda x, k: losses.n_plus_one_loss(
        jnp.einsum('bhwf,fc->bhwc', x, k[0, 0]) + self.bias, label,
        real=True))
    chunk_bytes = 256 * 1205 * 4
    self.assertLess(fused, 3 * chunk_bytes)  # A quarter of the logits.
    self.assertGreater(plain, logits_bytes)


if __name__ == '__main__':
  absltest.main()
