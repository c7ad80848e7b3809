"""Consecutive D forwards in one batched call (kernels/fused_forwards.py)
equal as many calls one after another: logits, state and gradients."""

import functools

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from configs import default as default_lib
from oasis_jax.kernels import conv
from oasis_jax.kernels import fused_forwards
from oasis_jax.kernels import select
from oasis_jax.models import layers


def _config(conv_impl):
  c = default_lib.get_config()
  c.data.num_classes = 5
  c.data.image_size = 64
  c.discriminator.channels = (4, 4, 8, 8, 8, 8)
  c.discriminator.last_channels = 4
  c.perf.conv_impl, c.perf.label_conv = conv_impl, 'dense'
  return c


def _apply(disc, params, stats, x):
  out, mutated = disc.apply({'params': params, 'batch_stats': stats}, x,
                            train=True, mutable=['batch_stats'])
  return out, mutated['batch_stats']


class FusedForwardsTest(parameterized.TestCase):

  @parameterized.parameters('xla', 'cpu')
  def test_one_call_equals_consecutive_calls(self, conv_impl):
    config = _config(conv_impl)
    images = [jax.random.uniform(jax.random.PRNGKey(i), (2, 64, 64, 3),
                                 minval=-1, maxval=1) for i in range(3)]
    disc = select.make_discriminator(config)
    v = disc.init(jax.random.PRNGKey(7), images[0], train=False)
    fused = select.make_discriminator(config, forwards=3)

    def consecutive(params):
      outs, stats = [], v['batch_stats']
      for x in images:
        out, stats = _apply(disc, params, stats, x)
        outs.append(out)
      return jnp.concatenate(outs), stats

    def one_call(params):
      return _apply(fused, params, v['batch_stats'],
                    jnp.concatenate(images))

    weights = jax.random.normal(jax.random.PRNGKey(9), (6, 64, 64, 6))
    results = {}
    for name, f in (('consecutive', consecutive), ('one_call', one_call)):
      loss = lambda p, f=f: jnp.sum(f(p)[0] * weights)
      results[name] = (*jax.jit(f)(v['params']),
                       jax.jit(jax.grad(loss))(v['params']))
    (want, want_stats, want_grads) = results['consecutive']
    (got, got_stats, got_grads) = results['one_call']
    self.assertGreater(float(jnp.std(want)), 1e-3)
    np.testing.assert_allclose(got, want, rtol=1e-5,
                               atol=1e-5 * float(jnp.abs(want).max()))
    # The state after the third power iteration, everywhere.
    for a, b in zip(jax.tree.leaves(got_stats), jax.tree.leaves(want_stats)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
      np.testing.assert_allclose(a, b, rtol=1e-4,
                                 atol=1e-4 * float(jnp.abs(b).max()))

  def test_the_table_wraps_only_one_forward_formulations(self):
    xla = select.formulations(_config('xla'), forwards=3)
    self.assertEqual(xla.conv, fused_forwards.PerChunk(layers.spectral_conv))
    self.assertEqual(xla.upsample_conv,
                     fused_forwards.PerChunk(layers.upsample_spectral_conv))
    cpu = select.formulations(_config('cpu'), forwards=3)
    self.assertIs(cpu.conv, conv.spectral_conv)
    self.assertIs(cpu.upsample_conv, conv.upsample_spectral_conv)
    for f in (xla, cpu):
      self.assertIsInstance(f.conv_layer, functools.partial)
      self.assertIs(f.conv_layer.func, fused_forwards.ConsecutiveForwardsConv)
      self.assertEqual(f.conv_layer.keywords, {'forwards': 3})
    self.assertIs(select.formulations(_config('xla')).conv_layer, layers.Conv)


if __name__ == '__main__':
  absltest.main()
