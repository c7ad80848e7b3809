"""notebooks/oasis_inference.ipynb runs from top to bottom (nbclient, CPU)."""

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from PIL import Image
import pytest

from configs import tiny64 as tiny64_lib
from oasis_jax.inference import export_format
from oasis_jax.inference import synthesis

nbclient = pytest.importorskip('nbclient', reason='pip install nbclient')
nbformat = pytest.importorskip('nbformat', reason='pip install nbformat')

_NOTEBOOKS = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'notebooks')
_NOTEBOOK = os.path.join(_NOTEBOOKS, 'oasis_inference.ipynb')
_EXAMPLES = os.path.join(os.path.dirname(_NOTEBOOKS), 'oasis_jax',
                         'examples')


tiny_config = tiny64_lib.get_config


def _install_cell():
  """The names the install cell defines (before it installs anything)."""
  notebook = nbformat.read(_NOTEBOOK, as_version=4)
  source = next(c.source for c in notebook.cells
                if 'def install_oasis_jax' in c.source)
  namespace = {}
  exec(source[:source.index("print('oasis_jax:'")], namespace)  # pylint: disable=exec-used
  return namespace


class InstallCellTest(parameterized.TestCase):
  """The install cell's choice of source, on a fresh runtime's folders."""

  def setUp(self):
    super().setUp()
    self.cell = _install_cell()
    self.find = self.cell['find_oasis_jax']
    self.install = self.cell['install_oasis_jax']
    self.folder = self.create_tempdir().full_path
    cwd = os.getcwd()
    os.chdir(self.folder)
    self.addCleanup(os.chdir, cwd)

  def _touch(self, *parts):
    path = os.path.join(self.folder, *parts)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, 'w').close()
    return path

  def test_source_variable_wins(self):
    self._touch('oasis_jax', 'main.py')
    self.assertEqual(self.find('git+https://host/o/oasis-jax.git'),
                     ('pip', 'git+https://host/o/oasis-jax.git'))

  def test_checkout_around_the_notebook(self):
    self._touch('oasis-jax', 'oasis_jax', 'main.py')  # A clone beside it.
    self.assertEqual(self.find('', folders=('.', 'oasis-jax')),
                     ('checkout', os.path.join(self.folder, 'oasis-jax')))

  @parameterized.parameters('oasis_jax-0.1.0-py3-none-any.whl',
                            'oasis_jax-0.1.0.tar.gz', 'oasis-jax-main.zip')
  def test_uploaded_package_or_repository_zip(self, name):
    path = self._touch(name)
    self.assertEqual(self.find('', folders=('.',)), ('pip', path))

  def test_installed_package_else_the_published_one(self):
    # Installed here (the test's own environment): nothing to do.
    self.assertEqual(self.find('', folders=('.',)), ('installed', None))
    with mock.patch.object(importlib.util, 'find_spec', return_value=None):
      self.assertEqual(self.find('', folders=('.',)),
                       ('pip', 'oasis-jax==0.1.0'))

  def test_published_release_is_this_version_of_the_package(self):
    setup_cfg = os.path.join(os.path.dirname(_NOTEBOOKS), 'setup.cfg')
    with open(setup_cfg) as f:
      version = next(line.split('=')[1].strip() for line in f
                     if line.startswith('version'))
    self.assertEqual(self.cell['PUBLISHED'], f'oasis-jax=={version}')

  def test_published_release_missing_asks_for_an_upload(self):
    calls = []
    def pip(command):
      calls.append(command[-1])
      if command[-1] == self.cell['PUBLISHED']:
        raise subprocess.CalledProcessError(1, command)
    with mock.patch.object(importlib.util, 'find_spec', return_value=None):
      how = self.install('', run=pip, upload=lambda: '/content/oasis.zip')
    self.assertEqual(how, 'upload')
    self.assertEqual(calls, ['oasis-jax==0.1.0', '/content/oasis.zip'])
    # Nothing uploaded (the dialog cancelled), or no dialog (not on Colab):
    # one clear line.
    for upload in (lambda: '', None):
      with mock.patch.object(importlib.util, 'find_spec', return_value=None):
        with self.assertRaisesRegex(RuntimeError, "'oasis-jax==0.1.0'"):
          self.install('', run=pip, upload=upload)
    # An upload that pip cannot install either: one line naming it.
    def fail(command):
      raise subprocess.CalledProcessError(1, command)
    with mock.patch.object(importlib.util, 'find_spec', return_value=None):
      with self.assertRaisesRegex(RuntimeError, "'/content/bad.zip'") as cm:
        self.install('', run=fail, upload=lambda: '/content/bad.zip')
    self.assertNotIn('\n', str(cm.exception))

  def test_upload_dialog_returns_the_uploaded_file(self):
    colab = mock.MagicMock()
    colab.files.upload.return_value = {'oasis-jax-main.zip': b'PK'}
    with mock.patch.dict(sys.modules, {'google': mock.MagicMock(colab=colab),
                                       'google.colab': colab}):
      path = self.cell['upload_package']()
    self.assertEqual(path, os.path.join(self.folder, 'oasis-jax-main.zip'))
    colab.files.upload.return_value = {}  # Cancelled.
    with mock.patch.dict(sys.modules, {'google': mock.MagicMock(colab=colab),
                                       'google.colab': colab}):
      self.assertEqual(self.cell['upload_package'](), '')

  def test_upload_is_only_asked_for_instead_of_the_release(self):
    def fail(command):
      raise subprocess.CalledProcessError(1, command)
    asked = []
    with self.assertRaisesRegex(RuntimeError, 'nowhere'):
      self.install('git+https://host/nowhere.git', run=fail,
                   upload=lambda: asked.append(1) or '/content/x.whl')
    self.assertEqual(asked, [])

  def test_failed_pip_install_is_one_clear_line(self):
    def fail(command):
      raise subprocess.CalledProcessError(1, command)
    with self.assertRaisesRegex(RuntimeError, 'OASIS_JAX_SOURCE') as cm:
      self.install('git+https://host/nowhere.git', run=fail)
    self.assertIn("'git+https://host/nowhere.git'", str(cm.exception))
    self.assertNotIn('\n', str(cm.exception))

  def test_install_runs_pip_only_where_needed(self):
    calls = []
    self.assertEqual(self.install('/wheels/oasis_jax.whl', run=calls.append),
                     'pip')
    self.assertEqual(calls[-1][-1], '/wheels/oasis_jax.whl')
    self.assertEqual(calls[-1][1:4], ['-m', 'pip', 'install'])
    # A checkout whose dependencies are installed: sys.path only.
    checkout = os.path.dirname(os.path.dirname(
        self._touch('oasis_jax', 'main.py')))
    calls.clear()
    with mock.patch.object(sys, 'path', list(sys.path)):
      self.assertEqual(self.install('', run=calls.append), 'checkout')
      self.assertEqual(sys.path[0], checkout)
    self.assertEqual(calls, [])
    # A fresh runtime (no flax): the checkout is pip-installed, editable.
    real_find_spec = importlib.util.find_spec
    with mock.patch.object(
        importlib.util, 'find_spec',
        lambda name: None if name == 'flax' else real_find_spec(name)), \
        mock.patch.object(sys, 'path', list(sys.path)):
      self.install('', run=calls.append)
    self.assertEqual(calls, [[sys.executable, '-m', 'pip', 'install', '-q',
                              '-e', checkout]])


class NotebookTest(parameterized.TestCase):

  def test_examples_are_small_label_maps_of_six_classes(self):
    files = sorted(os.listdir(_EXAMPLES))
    self.assertGreaterEqual(len(files), 3)
    total = 0
    for f in files:
      path = os.path.join(_EXAMPLES, f)
      total += os.path.getsize(path)
      with Image.open(path) as img:
        self.assertEqual((img.mode, img.size), ('L', (64, 64)), f)
        self.assertLess(np.asarray(img).max(), 6, f)
    self.assertLess(total, 50_000)

  def test_notebook_runs_top_to_bottom_on_a_tiny_checkpoint(self):
    root = tempfile.mkdtemp(prefix='notebook_test_')
    self.addCleanup(shutil.rmtree, root, True)
    checkpoint = export_format.save_inference(
        os.path.join(root, 'ckpt'), tiny_config(),
        synthesis.random_variables(tiny_config(), seed=1), source='tiny')
    notebook = nbformat.read(_NOTEBOOK, as_version=4)
    saved = dict(os.environ)
    os.environ['OASIS_CHECKPOINT'] = checkpoint  # Read by the parameters.
    os.environ.pop('OASIS_OFFICIAL_EMA', None)
    os.environ.pop('OASIS_OFFICIAL_G', None)
    try:
      nbclient.NotebookClient(
          notebook, timeout=240, kernel_name='python3',
          resources={'metadata': {'path': _NOTEBOOKS}}).execute()
    finally:
      os.environ.clear()
      os.environ.update(saved)
    text, images, html = '', 0, ''
    for cell in notebook.cells:
      for output in cell.get('outputs', []):
        text += output.get('text', '')
        images += 'image/png' in output.get('data', {})
        html += output.get('data', {}).get('text/html', '')
    if importlib.util.find_spec('gradio') is not None:  # The demo, inline.
      self.assertIn('<iframe src="http://127.0.0.1:', html)
    self.assertIn('Synthesizer(6 classes, 64x64', text)
    self.assertIn('tiny', text)  # The checkpoint's source, not untrained.
    self.assertNotIn('UNTRAINED', text)
    self.assertIn('mean |change| inside', text)
    self.assertEqual(images, 4)  # Generated, multi-modal, edit, interpolation.


if __name__ == '__main__':
  absltest.main()
