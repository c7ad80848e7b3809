"""Tests of export_format.py: the inference checkpoint, written and read."""

import json
import os

from absl.testing import absltest
import jax
import numpy as np

from configs import tiny
from oasis_jax.inference import export_format


def _variables(seed: int) -> dict:
  """A small variables tree: {'params', 'batch_stats'} of numpy arrays."""
  rng = np.random.default_rng(seed)
  return {'params': {'conv': {'kernel': rng.standard_normal((3, 3, 2, 4))}},
          'batch_stats': {'norm': {'mean': rng.standard_normal(4)}}}


def _tree_equal(a, b) -> bool:
  return (jax.tree.structure(a) == jax.tree.structure(b) and
          all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b))))


class ExportFormatTest(absltest.TestCase):

  def test_round_trip_keeps_config_variables_and_manifest(self):
    config = tiny.get_config()
    out = os.path.join(self.create_tempdir().full_path, 'export')
    self.assertFalse(export_format.is_inference_checkpoint(out))
    path = export_format.save_inference(out, config, _variables(0),
                                        discriminator=_variables(1),
                                        source='test')
    self.assertTrue(export_format.is_inference_checkpoint(path))
    loaded, variables, manifest = export_format.load_inference(path)
    self.assertEqual(loaded.discriminator.channels,
                     tuple(config.discriminator.channels))
    self.assertTrue(_tree_equal(variables['generator'], _variables(0)))
    self.assertTrue(_tree_equal(variables['discriminator'], _variables(1)))
    self.assertEqual(
        (manifest['format'], manifest['generator'], manifest['source'],
         manifest['has_discriminator']),
        ('oasis_jax.inference.synthesis', 'ema', 'test', True))

  def test_saving_again_replaces_the_checkpoint(self):
    config = tiny.get_config()
    out = os.path.join(self.create_tempdir().full_path, 'export')
    export_format.save_inference(out, config, _variables(0),
                                 discriminator=_variables(1))
    export_format.save_inference(out, config, _variables(2),
                                 generator_kind='generator')
    _, variables, manifest = export_format.load_inference(out)
    self.assertTrue(_tree_equal(variables['generator'], _variables(2)))
    self.assertNotIn('discriminator', variables)
    self.assertEqual(manifest['generator'], 'generator')
    self.assertFalse(os.path.exists(out + '.tmp'))

  def test_other_versions_and_folders_are_refused(self):
    path = export_format.save_inference(
        os.path.join(self.create_tempdir().full_path, 'export'),
        tiny.get_config(), _variables(0))
    with open(os.path.join(path, export_format.INFERENCE_MANIFEST), 'w') as f:
      json.dump({'format': export_format.INFERENCE_FORMAT, 'version': 99}, f)
    with self.assertRaisesRegex(ValueError, 'unsupported format'):
      export_format.load_inference(path)
    empty = self.create_tempdir().full_path
    with self.assertRaisesRegex(FileNotFoundError,
                                'not an oasis-jax inference checkpoint'):
      export_format.load_inference(empty)


if __name__ == '__main__':
  absltest.main()
