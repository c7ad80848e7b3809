"""Tests of the generator and discriminator: sizes, noise, shapes, errors."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import geometry
from configs import default as default_lib
from oasis_jax import models
from oasis_jax.training import train_state
from oasis_jax.models import generator as generator_lib


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def tiny_config(**data):
  c = default_lib.get_config()
  c.data.num_classes = 5
  c.data.image_size = 64
  c.generator.channels = 2
  c.generator.z_dim = 3
  c.generator.spade_hidden = 4
  c.discriminator.channels = (4, 4, 8, 8, 8, 8)
  c.discriminator.last_channels = 4
  for k, v in data.items():
    setattr(c.data, k, v)
  return c


class OfficialSizesTest(parameterized.TestCase):
  """Parameter counts of the official networks, checked without compute."""

  @parameterized.named_parameters(
      ('ade20k', 151, 256, 1.0, 74_314_691, 22_258_904),
      ('coco_stuff', 183, 256, 1.0, 75_199_427, None),
      ('cityscapes', 35, 512, 2.0, 71_107_523, None))
  def test_parameter_counts(self, classes, size, aspect, n_g, n_d):
    c = default_lib.get_config()
    c.data.num_classes, c.data.image_size = classes, size
    c.data.aspect_ratio = aspect
    (g_p, g_s), (d_p, _) = jax.eval_shape(
        lambda: train_state.init_variables(c, jax.random.PRNGKey(0)))
    self.assertEqual(_count(g_p), n_g)
    if n_d is not None:
      self.assertEqual(_count(d_p), n_d)
    # 16 SN layers (u, v) and 16 SPADE BNs (mean, var) in G.
    self.assertLen(jax.tree.leaves(g_s), 64)

  def test_official_output_shapes(self):
    c = default_lib.get_config()
    c.data.num_classes, c.data.image_size, c.data.aspect_ratio = 35, 512, 2.0
    g, d = models.make_generator(c), models.make_discriminator(c)
    label = jax.ShapeDtypeStruct((2, 256, 512), jnp.int32)
    z = jax.ShapeDtypeStruct((2, 64), jnp.float32)
    g_vars = jax.eval_shape(lambda: g.init(jax.random.PRNGKey(0), jnp.zeros(
        (1, 256, 512), jnp.int32), jnp.zeros((1, 64)), train=False))
    out = jax.eval_shape(lambda v, l, z: g.apply(v, l, z, train=False),
                         g_vars, label, z)
    self.assertEqual(out.shape, (2, 256, 512, 3))
    d_vars = jax.eval_shape(lambda: d.init(jax.random.PRNGKey(0), jnp.zeros(
        (1, 256, 512, 3)), train=False))
    logits = jax.eval_shape(lambda v, x: d.apply(v, x, train=False), d_vars,
                            out)
    self.assertEqual(logits.shape, (2, 256, 512, 36))


class GeneratorTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.config = tiny_config()
    cls.gen = models.make_generator(cls.config)
    cls.label = jax.random.randint(jax.random.PRNGKey(0), (2, 64, 64), 0, 5)
    cls.variables = cls.gen.init(jax.random.PRNGKey(1), cls.label,
                                 jnp.zeros((2, 3)), train=False)
    cls.apply = staticmethod(jax.jit(
        lambda v, l, z: cls.gen.apply(v, l, z, train=False)))

  def test_generator_output_matches_label_size(self):
    z = jax.random.normal(jax.random.PRNGKey(2), (2, 3))
    out = self.apply(self.variables, self.label, z)
    self.assertEqual(out.shape, (2, 64, 64, 3))
    self.assertLessEqual(float(jnp.abs(out).max()), 1.0)

  def test_per_pixel_noise_equal_to_broadcast_gives_same_image(self):
    z = jax.random.normal(jax.random.PRNGKey(2), (2, 3))
    z_map = jnp.broadcast_to(z[:, None, None], (2, 64, 64, 3))
    np.testing.assert_allclose(self.apply(self.variables, self.label, z),
                               self.apply(self.variables, self.label, z_map),
                               rtol=1e-6, atol=1e-6)

  def test_wrong_noise_shape_is_an_error(self):
    with self.assertRaisesRegex(ValueError, r'z_dim=3'):
      self.gen.apply(self.variables, self.label, jnp.zeros((2, 4)),
                     train=False)
    with self.assertRaisesRegex(ValueError, 'needs z'):
      self.gen.apply(self.variables, self.label, None, train=False)

  def test_without_3d_noise_takes_no_z(self):
    c = tiny_config()
    c.generator.use_3d_noise = False
    gen = models.make_generator(c)
    v = gen.init(jax.random.PRNGKey(0), self.label, train=False)
    self.assertEqual(v['params']['fc']['kernel'].shape[2], 5)
    with self.assertRaisesRegex(ValueError, 'takes no z'):
      gen.apply(v, self.label, jnp.zeros((2, 3)), train=False)

  @parameterized.parameters(4, 5, 7)
  def test_other_numbers_of_res_blocks(self, n):
    c = tiny_config()
    c.generator.num_res_blocks = n
    gen = models.make_generator(c)
    label = jnp.zeros((1, 64, 64), jnp.int32)
    v = jax.eval_shape(lambda: gen.init(jax.random.PRNGKey(0), label,
                                        jnp.zeros((1, 3)), train=False))
    out = jax.eval_shape(lambda v: gen.apply(v, label, jnp.zeros((1, 3)),
                                             train=False), v)
    self.assertEqual(out.shape, (1, 64, 64, 3))
    self.assertEqual(
        v['params']['fc']['kernel'].shape,
        (3, 3, 8, 2 * generator_lib.channel_multipliers(n)[0]))
    self.assertLen([k for k in v['params'] if k.startswith('body_')], n)

  def test_non_square_latent_and_shapes(self):
    self.assertEqual(geometry.latent_hw(512, 2.0, 6), (8, 16))
    self.assertEqual(geometry.latent_hw(256, 1.0, 6), (8, 8))
    c = tiny_config(image_size=128, aspect_ratio=2.0)
    (g_p, _), _ = jax.eval_shape(
        lambda: train_state.init_variables(c, jax.random.PRNGKey(0)))
    gen = models.make_generator(c)
    label = jax.ShapeDtypeStruct((2, 64, 128), jnp.int32)
    v = jax.eval_shape(lambda: gen.init(jax.random.PRNGKey(0), jnp.zeros(
        (1, 64, 128), jnp.int32), jnp.zeros((1, 3)), train=False))
    out = jax.eval_shape(lambda v, l: gen.apply(v, l, jnp.zeros((2, 3)),
                                                train=False), v, label)
    self.assertEqual(out.shape, (2, 64, 128, 3))
    self.assertEqual(geometry.image_hw(c.data), (64, 128))

  def test_label_size_not_matching_aspect_is_an_error(self):
    with self.assertRaisesRegex(ValueError, 'aspect_ratio=1.0'):
      self.gen.apply(self.variables, jnp.zeros((1, 64, 128), jnp.int32),
                     jnp.zeros((1, 3)), train=False)


class DiscriminatorTest(absltest.TestCase):

  def test_output_has_n_plus_one_channels_at_full_resolution(self):
    c = tiny_config()
    d = models.make_discriminator(c)
    x = jnp.zeros((2, 64, 128, 3))
    v = d.init(jax.random.PRNGKey(0), x, train=False)
    logits, mutated = d.apply(v, x, train=True, mutable=['batch_stats'])
    self.assertEqual(logits.shape, (2, 64, 128, 6))
    # Every conv but the last 1x1 is spectral-normalized: one (u, v) each.
    n_kernels = len([p for p in jax.tree_util.tree_leaves_with_path(
        v['params']) if 'kernel' in str(p[0])])
    self.assertLen(jax.tree.leaves(mutated['batch_stats']),
                   2 * (n_kernels - 1))

  def test_indivisible_size_is_an_error(self):
    d = models.make_discriminator(tiny_config())
    with self.assertRaisesRegex(ValueError, 'divisible by 64'):
      d.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False)

  def test_without_spectral_norm_there_is_no_state(self):
    c = tiny_config()
    c.discriminator.use_spectral_norm = False
    v = models.make_discriminator(c).init(
        jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)), train=False)
    self.assertNotIn('batch_stats', v)


if __name__ == '__main__':
  absltest.main()
