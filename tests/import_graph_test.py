"""Tests of tools/import_graph.py: imports only go down the layers."""

import os
import subprocess
import sys

from absl.testing import absltest

from tools import import_graph

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ImportGraphTest(absltest.TestCase):

  def _tree(self, files: dict[str, str]) -> str:
    root = self.create_tempdir().full_path
    for rel, text in files.items():
      path = os.path.join(root, rel)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, 'w') as f:
        f.write(text)
    return root

  def test_the_project_imports_only_downwards(self):
    graph, problems = import_graph.check()
    self.assertEmpty(problems)
    self.assertIn('oasis_jax.training.checkpointing',
                  graph['oasis_jax.inference.synthesis'])
    self.assertNotIn('oasis_jax.training.train',
                     graph['oasis_jax.inference.synthesis'])

  def test_script_prints_the_graph_and_exits_0(self):
    out = subprocess.run([sys.executable, 'tools/import_graph.py'],
                         cwd=_REPO, capture_output=True, text=True,
                         check=False)
    self.assertEqual(out.returncode, 0, out.stderr)
    self.assertIn('[runtime]', out.stdout)
    self.assertIn('  oasis_jax.training.train -> ', out.stdout)

  def test_every_package_is_one_layer(self):
    for package in ('runtime', 'config', 'kernels', 'models', 'pretrained',
                    'training', 'inference', 'evaluation'):
      name = f'oasis_jax.{package}'
      self.assertEqual(import_graph.layer_of(name + '.anything'),
                       import_graph.layer_of(name), name)
    self.assertLess(import_graph.layer_of('oasis_jax.models.layers'),
                    import_graph.layer_of('oasis_jax.training.steps'))
    self.assertIsNotNone(import_graph.layer_of('benchmarks.measure'))
    self.assertIsNotNone(import_graph.layer_of('configs.coco'))

  def test_upward_import_is_reported(self):
    root = self._tree({
        'oasis_jax/__init__.py': '',
        'oasis_jax/models/__init__.py': '',
        'oasis_jax/models/layers.py':
            'from oasis_jax.training import train\n',
        'oasis_jax/training/__init__.py': '',
        'oasis_jax/training/train.py': '',
    })
    _, problems = import_graph.check(root)
    self.assertEqual(problems, [
        'oasis_jax.models.layers (layer models) imports '
        'oasis_jax.training.train (layer training, above it).'])

  def test_cycle_within_a_layer_is_reported(self):
    root = self._tree({
        'oasis_jax/__init__.py': '',
        'oasis_jax/evaluation/__init__.py': '',
        'oasis_jax/evaluation/fid.py':
            'from oasis_jax.evaluation import frechet\n',
        'oasis_jax/evaluation/frechet.py':
            'import oasis_jax.evaluation.fid\n',
    })
    _, problems = import_graph.check(root)
    self.assertEqual(problems, [
        'import cycle: oasis_jax.evaluation.fid -> '
        'oasis_jax.evaluation.frechet -> oasis_jax.evaluation.fid'])

  def test_function_level_and_unlisted_modules_are_reported(self):
    root = self._tree({
        'oasis_jax/__init__.py': '',
        'oasis_jax/training/__init__.py': '',
        'oasis_jax/training/train.py':
            'def f():\n  from oasis_jax.training import steps\n',
        'oasis_jax/training/steps.py': '',
        'oasis_jax/extra.py': '',
    })
    _, problems = import_graph.check(root)
    self.assertLen(problems, 2)
    self.assertRegex(problems[0], r'train\.py: imports '
                     r'oasis_jax\.training\.steps inside a function')
    self.assertRegex(problems[1], r'oasis_jax\.extra .* is in no layer')


if __name__ == '__main__':
  absltest.main()
