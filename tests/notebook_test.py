"""notebooks/oasis_inference.ipynb runs from top to bottom (nbclient, CPU)."""

import importlib.util
import os
import shutil
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from PIL import Image
import pytest

from configs import tiny64 as tiny64_lib
from oasis_jax import inference
from oasis_jax import inference_checkpoint

nbclient = pytest.importorskip('nbclient', reason='pip install nbclient')
nbformat = pytest.importorskip('nbformat', reason='pip install nbformat')

_NOTEBOOKS = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'notebooks')
_NOTEBOOK = os.path.join(_NOTEBOOKS, 'oasis_inference.ipynb')
_EXAMPLES = os.path.join(_NOTEBOOKS, 'examples')


tiny_config = tiny64_lib.get_config


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
    checkpoint = inference_checkpoint.save(
        os.path.join(root, 'ckpt'), tiny_config(),
        inference.random_variables(tiny_config(), seed=1), source='tiny')
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
