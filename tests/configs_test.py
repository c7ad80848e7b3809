"""Tests of every shipped config file: it resolves, validates and builds."""

import glob
import importlib
import os
import re

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp

import data_pipelines
from data_pipelines import geometry
from oasis_jax import models
from oasis_jax.config import resolution
from oasis_jax.config import validation
from oasis_jax.config import workdir as workdir_config
from oasis_jax.kernels import select
from oasis_jax.training import train_state

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config_modules() -> list[str]:
  """configs.X and configs.ablations.X of every file (new ones included)."""
  names = []
  for pattern in ('configs/*.py', 'configs/ablations/*.py'):
    for path in sorted(glob.glob(os.path.join(_REPO, pattern))):
      if os.path.basename(path) != '__init__.py':
        names.append(os.path.relpath(path, _REPO)[:-3].replace(os.sep, '.'))
  return names


_MODULES = _config_modules()


def _load(module: str):
  return importlib.import_module(module).get_config()


class ConfigFilesTest(parameterized.TestCase):

  def test_the_glob_finds_the_data_sets_and_the_ablations(self):
    for module in ('configs.default', 'configs.tiny', 'configs.lvis',
                   'configs.ablations.spade_d_vgg'):
      self.assertIn(module, _MODULES)

  @parameterized.parameters(_MODULES)
  def test_resolves_and_validates(self, module):
    config = _load(module)
    resolved = resolution.resolve(config)
    validation.validate(resolved)
    self.assertNotIn('auto', resolved.perf.to_dict().values())
    self.assertEqual(resolution.resolve(resolved), resolved)  # Idempotent.
    self.assertIn(models.discriminator_kind(resolved),
                  models.DISCRIMINATOR_KINDS)

  @parameterized.parameters(_MODULES)
  def test_reads_back_from_config_json_unchanged(self, module):
    config = resolution.resolve(_load(module))
    read = workdir_config.from_json(config.to_json_best_effort(indent=2))
    self.assertEqual(read.to_dict(), config.to_dict())

  @parameterized.parameters(_MODULES)
  def test_model_shapes(self, module):
    """The networks build: images of the configured size, D's N+1 maps."""
    config = resolution.resolve(_load(module))
    h, w = geometry.image_hw(config.data)
    state = train_state.abstract_train_state(config)
    self.assertEqual(state.ema is None, not config.ema.use_ema)
    label = jax.ShapeDtypeStruct((1, h, w), jnp.int32)
    z = (jax.ShapeDtypeStruct((1, config.generator.z_dim), jnp.float32)
         if config.generator.use_3d_noise else None)
    g = state.generator
    image = jax.eval_shape(
        lambda v, l, z: select.make_generator(config).apply(
            v, l, z, train=False),
        {'params': g.params, 'batch_stats': g.batch_stats}, label, z)
    self.assertEqual(image.shape, (1, h, w, 3))
    if config.discriminator.kind == 'oasis':
      d = state.discriminator
      logits = jax.eval_shape(
          lambda v, x: select.make_discriminator(config).apply(
              v, x, train=False),
          {'params': d.params, 'batch_stats': d.batch_stats}, image)
      self.assertEqual(logits.shape, (1, h, w, config.data.num_classes + 1))

  def test_default_lists_every_data_set_name(self):
    with open(os.path.join(_REPO, 'configs', 'default.py')) as f:
      source = f.read()
    comment = re.search(r'((?:\n *#[^\n]*)+)\n *data\.name = ', source)
    self.assertIsNotNone(comment)
    listed = re.findall(r"'([a-z0-9_]+)'", comment.group(1))
    self.assertCountEqual(listed, data_pipelines.DATASETS)


if __name__ == '__main__':
  absltest.main()
