"""Tests of resolving a config: 'auto' choices made concrete per platform."""

from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp

from configs import default as default_lib
from oasis_jax.config import resolution
from oasis_jax import models
from oasis_jax.kernels import select
from oasis_jax.kernels import conv
from oasis_jax.kernels import label_conv
from oasis_jax.kernels import spade_eval
from oasis_jax.models import layers


def _resolved(platform, **perf):
  config = default_lib.get_config()
  for k, v in perf.items():
    config.perf[k] = v
  with mock.patch.object(resolution, 'platform', return_value=platform):
    return resolution.resolve(config)


class ResolveTest(parameterized.TestCase):

  def test_cpu_takes_the_fast_formulations(self):
    perf = _resolved('cpu').perf
    self.assertEqual((perf.conv_impl, perf.label_conv, perf.cpu_scheduler,
                      perf.init_compile),
                     ('cpu', 'gather', 'memory', 'unoptimized'))
    f = select.formulations(_resolved('cpu'))
    self.assertIs(f.conv, conv.spectral_conv)
    self.assertEqual(f.label_conv, label_conv.GatherLabelConv(False))
    self.assertIs(f.res_block, spade_eval.FusedEvalResBlock)
    self.assertIs(f.upsample_conv, conv.upsample_spectral_conv)

  @parameterized.parameters('gpu', 'tpu')
  def test_accelerators_take_the_reference(self, platform):
    config = _resolved(platform)
    perf = config.perf
    self.assertEqual((perf.conv_impl, perf.label_conv, perf.cpu_scheduler,
                      perf.init_compile),
                     ('xla', 'dense', 'default', 'optimized'))
    f = select.formulations(config)
    self.assertIs(f.conv, layers.spectral_conv)
    self.assertIs(f.label_conv, layers.dense_label_conv)
    self.assertIs(f.upsample_conv, layers.upsample_spectral_conv)
    self.assertIs(f.conv_layer, layers.Conv)
    self.assertIsNone(f.res_block)

  def test_explicit_choices_are_kept(self):
    perf = _resolved('gpu', conv_impl='cpu', label_conv='gather_matmul').perf
    self.assertEqual((perf.conv_impl, perf.label_conv),
                     ('cpu', 'gather_matmul'))

  def test_resolve_is_idempotent_and_keeps_the_lock(self):
    config = default_lib.get_config()
    config.lock()
    once = resolution.resolve(config)
    self.assertTrue(once.is_locked)
    self.assertEqual(resolution.resolve(once), once)
    self.assertEqual(config.perf.conv_impl, 'auto')  # Not modified.

  @parameterized.parameters(('conv_impl', 'fast'), ('label_conv', 'sparse'),
                            ('cpu_scheduler', 'fastest'),
                            ('compute_dtype', 'float16'))
  def test_unknown_value_names_the_key(self, key, value):
    with self.assertRaisesRegex(ValueError,
                                rf"config.perf.{key} .*got '{value}'"):
      _resolved('cpu', **{key: value})

  def test_float64_needs_x64(self):
    with jax.enable_x64(False):
      with self.assertRaisesRegex(ValueError, 'JAX_ENABLE_X64'):
        _resolved('cpu', compute_dtype='float64')
    with jax.enable_x64(True):
      config = _resolved('cpu', compute_dtype='float64')
      self.assertEqual(models.generator_config(config).dtype, jnp.float64)


if __name__ == '__main__':
  absltest.main()
