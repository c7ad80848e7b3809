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
    self.assertIn('oasis_jax.checkpointing', graph['oasis_jax.inference'])
    self.assertNotIn('oasis_jax.train', graph['oasis_jax.inference'])

  def test_script_prints_the_graph_and_exits_0(self):
    out = subprocess.run([sys.executable, 'tools/import_graph.py'],
                         cwd=_REPO, capture_output=True, text=True,
                         check=False)
    self.assertEqual(out.returncode, 0, out.stderr)
    self.assertIn('[base]', out.stdout)
    self.assertIn('  oasis_jax.train -> ', out.stdout)

  def test_upward_import_is_reported(self):
    root = self._tree({
        'oasis_jax/__init__.py': '',
        'oasis_jax/geometry.py': 'from oasis_jax import train\n',
        'oasis_jax/train.py': '',
    })
    _, problems = import_graph.check(root)
    self.assertEqual(problems, [
        'oasis_jax.geometry (layer base) imports oasis_jax.train (layer '
        'loop, above it).'])

  def test_cycle_within_a_layer_is_reported(self):
    root = self._tree({
        'oasis_jax/__init__.py': '',
        'oasis_jax/fid.py': 'from oasis_jax import metrics\n',
        'oasis_jax/metrics.py': 'import oasis_jax.fid\n',
    })
    _, problems = import_graph.check(root)
    self.assertEqual(problems, [
        'import cycle: oasis_jax.fid -> oasis_jax.metrics -> oasis_jax.fid'])

  def test_function_level_and_unlisted_modules_are_reported(self):
    root = self._tree({
        'oasis_jax/__init__.py': '',
        'oasis_jax/train.py': 'def f():\n  from oasis_jax import steps\n',
        'oasis_jax/steps.py': '',
        'oasis_jax/extra.py': '',
    })
    _, problems = import_graph.check(root)
    self.assertLen(problems, 2)
    self.assertRegex(problems[0], r'train\.py: imports oasis_jax\.steps '
                     'inside a function')
    self.assertRegex(problems[1], r'oasis_jax\.extra .* is in no layer')


if __name__ == '__main__':
  absltest.main()
