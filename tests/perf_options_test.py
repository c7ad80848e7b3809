"""Tests of the speed and memory options: bfloat16, remat, the fused D head."""

import functools

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import geometry
from configs import tiny as tiny_lib
from oasis_jax.config import resolution
from oasis_jax.training import steps
from oasis_jax.training import train_state


def _config(**perf):
  c = tiny_lib.get_config()
  for k, v in perf.items():
    setattr(c.perf, k, v)
  return c


def _batch(config):
  h, w = geometry.image_hw(config.data)
  rng = np.random.default_rng(0)
  return {'image': rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8),
          'label': rng.integers(0, config.data.num_classes, (2, h, w),
                                dtype=np.int32)}


@functools.lru_cache(maxsize=None)
def _one_iteration(compute_dtype='float32', remat=False, fused_d_head=False):
  config = _config(compute_dtype=compute_dtype, remat=remat,
                   fused_d_head=fused_d_head)
  state = train_state.create_train_state(config, jax.random.PRNGKey(0))
  step = jax.jit(functools.partial(steps.train_step, config=config,
                                   return_aux=True))
  return state, step(state, _batch(config), jax.random.PRNGKey(1))


def _max_rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)


class MixedPrecisionTest(absltest.TestCase):

  def test_bf16_iteration_stays_close_to_float32(self):
    _, (s32, m32, a32) = _one_iteration('float32')
    _, (s16, m16, a16) = _one_iteration('bfloat16')
    # Stated tolerances: losses within 1%, the generator's image and the D
    # logits within 5% of their scale (bfloat16 has 8 mantissa bits).
    for k in m32:
      np.testing.assert_allclose(m16[k], m32[k], rtol=1e-2, atol=1e-6,
                                 err_msg=k)
    self.assertLess(_max_rel(a16['g']['fake'], a32['g']['fake']), 5e-2)
    self.assertLess(_max_rel(a16['d']['d_real'], a32['d']['d_real']), 5e-2)
    # Parameters, statistics and optimizer state stay float32.
    for tree in (s16.generator, s16.discriminator, s16.ema):
      for leaf in jax.tree.leaves(tree):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
          self.assertEqual(leaf.dtype, jnp.float32)
    self.assertEqual(a16['g']['fake'].dtype, jnp.float32)

  def test_bf16_inference(self):
    c32, c16 = _config(), _config(compute_dtype='bfloat16')
    state, _ = _one_iteration('float32')
    label = jnp.asarray(_batch(c32)['label'])
    # Settle the BN statistics and SN vectors first: eval mode of a barely
    # trained generator saturates at +-1, where any rounding flips signs.
    refresh = jax.jit(functools.partial(steps.refresh_stats_step, config=c32))
    variables = {'params': state.generator.params,
                 'batch_stats': state.generator.batch_stats}
    for i in range(15):
      variables = refresh(variables, label, jax.random.PRNGKey(i))
    z = steps.draw_noise(jax.random.PRNGKey(3), 2, c32)
    out = {n: jax.jit(functools.partial(steps.generate, config=c))(
        variables, label, z) for n, c in (('f32', c32), ('bf16', c16))}
    self.assertEqual(out['bf16'].shape, (2, 32, 32, 3))
    self.assertEqual(out['bf16'].dtype, jnp.float32)
    self.assertLess(_max_rel(out['bf16'], out['f32']), 5e-2)


class RematTest(absltest.TestCase):

  def test_remat_gives_the_same_iteration(self):
    _, (s0, m0, a0) = _one_iteration('float32', False)
    _, (s1, m1, a1) = _one_iteration('float32', True)
    for k in m0:
      np.testing.assert_allclose(m1[k], m0[k], rtol=1e-5, err_msg=k)
    for g0, g1 in zip(jax.tree.leaves(a0['d']['grads']),
                      jax.tree.leaves(a1['d']['grads'])):
      np.testing.assert_allclose(g1, g0, rtol=1e-4, atol=1e-7)
    for p0, p1 in zip(jax.tree.leaves(s0.generator.batch_stats),
                      jax.tree.leaves(s1.generator.batch_stats)):
      np.testing.assert_allclose(p1, p0, rtol=1e-4, atol=1e-6)


class FusedDiscriminatorHeadTest(absltest.TestCase):

  def test_fused_head_gives_the_same_iteration(self):
    _, (s0, m0, a0) = _one_iteration('float32', False, False)
    _, (s1, m1, a1) = _one_iteration('float32', False, True)
    self.assertEqual(set(m1), set(m0))
    for k in m0:
      np.testing.assert_allclose(m1[k], m0[k], rtol=1e-5, err_msg=k)
    for side in ('d', 'g'):
      for g0, g1 in zip(jax.tree.leaves(a0[side]['grads']),
                        jax.tree.leaves(a1[side]['grads']), strict=True):
        np.testing.assert_allclose(g1, g0, rtol=1e-4, atol=1e-7)
    for p0, p1 in zip(jax.tree.leaves(s0.discriminator.params),
                      jax.tree.leaves(s1.discriminator.params), strict=True):
      np.testing.assert_allclose(p1, p0, rtol=1e-5, atol=1e-7)
    # With the fused head the step's D outputs are the last conv's inputs.
    self.assertEqual(a1['d']['d_real'].shape[-1],
                     _config().discriminator.last_channels)


class CompilerOptionsTest(absltest.TestCase):

  def test_cpu_scheduler_choices_and_error(self):
    config = tiny_lib.get_config()
    with config.unlocked():
      config.perf.cpu_scheduler = 'memory'
    want = ({'xla_cpu_scheduler_type': 'CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED'}
            if resolution.platform() == 'cpu' else {})
    self.assertEqual(steps.compiler_options(config), want)
    with config.unlocked():
      config.perf.cpu_scheduler = 'fastest'
    with self.assertRaisesRegex(ValueError,
                                r"perf.cpu_scheduler .*got 'fastest'"):
      steps.compiler_options(config)


if __name__ == '__main__':
  absltest.main()
