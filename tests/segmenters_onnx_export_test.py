"""Tests of segmenters/onnx_export.py: onnxruntime against the Flax forward.

Each network at full depth with random weights (BatchNorm statistics and
affines random too, so that folding them is checked) on small images whose
sides are not multiples of the output stride.
"""

import functools
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np
import pytest

from oasis_jax.evaluation import segmentation
from oasis_jax.evaluation.segmenters import convert
from oasis_jax.evaluation.segmenters import drn
from oasis_jax.evaluation.segmenters import networks
from oasis_jax.evaluation.segmenters import protocol as protocol_lib

ort = pytest.importorskip('onnxruntime')
onnx_export = pytest.importorskip(
    'oasis_jax.evaluation.segmenters.onnx_export')  # Needs onnx.

# Protocol, image size (height, width): DRN's and DeepLab's not multiples of
# 8 (DRN's output is cropped; MSC's 0.75 scale is not 3/4 of the grid).
CASES = (('drn', 'cityscapes/drn', (36, 52)),
         ('upernet', 'ade20k/single_scale', (64, 64)),
         ('deeplab', 'coco_stuff/deeplab_msc', (36, 44)))
RTOL = 2e-5  # Of the largest score: float32 sums over thousands of terms.


@functools.cache
def _variables(name: str):
  """Random variables of the protocol's network (numpy, fixed seed)."""
  protocol = protocol_lib.get(*name.split('/'))
  model = networks.get(protocol.network).make(protocol.num_classes)
  rng = np.random.default_rng(0)

  def fill(path, leaf):
    key, shape = path[-1].key, leaf.shape
    if key == 'kernel':  # He-normal over the fan-in (H W I of HWIO).
      fan_in = int(np.prod(shape[:-1]))
      return rng.normal(0, np.sqrt(2 / fan_in), shape).astype(np.float32)
    low, high = {'var': (0.5, 2.0), 'scale': (0.5, 1.5)}.get(key,
                                                             (-0.1, 0.1))
    return rng.uniform(low, high, shape).astype(np.float32)

  return jax.tree_util.tree_map_with_path(
      fill, convert.abstract_variables(model))


def _pixels(hw, seed: int = 1) -> np.ndarray:
  """Two random 8-bit images [2, H, W, 3] as float 0..255."""
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (2, *hw, 3)).astype(np.float32)


def _run(model_bytes: bytes, pixels) -> np.ndarray:
  """onnxruntime's scores, NHWC."""
  session = ort.InferenceSession(model_bytes,
                                 providers=['CPUExecutionProvider'])
  out = session.run(['scores'], {'images': onnx_export.onnx_input(pixels)})
  return out[0].transpose(0, 2, 3, 1)


@functools.cache
def _reference(name: str, hw) -> np.ndarray:
  """The Flax scores of `_pixels(hw)`, NHWC."""
  protocol = protocol_lib.get(*name.split('/'))
  fn = jax.jit(functools.partial(onnx_export.reference_scores, protocol))
  return np.asarray(fn(_variables(name), _pixels(hw)))


def _assert_same_scores(test, ref: np.ndarray, got: np.ndarray):
  """Within RTOL of the largest score; the same class wherever the
  reference's best two classes are further apart than that."""
  test.assertEqual(got.shape, ref.shape)
  tol = RTOL * np.abs(ref).max()
  np.testing.assert_allclose(got, ref, rtol=0, atol=tol)
  top2 = np.sort(ref, -1)[..., -2:]
  clear = top2[..., 1] - top2[..., 0] > 2 * tol
  test.assertGreater(clear.mean(), 0.9)
  np.testing.assert_array_equal(got.argmax(-1)[clear], ref.argmax(-1)[clear])


class OnnxExportTest(parameterized.TestCase):

  @parameterized.named_parameters(*CASES)
  def test_onnxruntime_matches_the_flax_forward(self, name, hw):
    protocol = protocol_lib.get(*name.split('/'))
    model = onnx_export.export(protocol, _variables(name), hw)
    ref = _reference(name, hw)
    self.assertEqual(ref.shape[-1], protocol.num_classes)
    _assert_same_scores(self, ref, _run(model.SerializeToString(),
                                        _pixels(hw)))

  def test_drn_scores_have_the_input_size(self):
    model = onnx_export.export(protocol_lib.get('cityscapes'),
                               _variables('cityscapes/drn'), (36, 52))
    dims = model.graph.output[0].type.tensor_type.shape.dim
    self.assertEqual([d.dim_value for d in dims[1:]], [drn.NUM_CLASSES, 36,
                                                       52])

  def test_command_writes_a_model_the_onnx_route_runs(self):
    name, hw = 'cityscapes/drn', (36, 52)
    state = drn.to_state_dict(_variables(name))
    with tempfile.TemporaryDirectory() as tmp:
      weights, out = os.path.join(tmp, 'w.npz'), os.path.join(tmp, 'm.onnx')
      np.savez(weights, **state)
      subprocess.run(
          [sys.executable, '-m', 'oasis_jax.evaluation.segmenters.onnx_export',
           '--protocol=cityscapes', f'--weights={weights}', '--height=36',
           '--width=52', f'--output={out}'], check=True, capture_output=True)
      with open(out, 'rb') as f:
        got = _run(f.read(), _pixels(hw))
      # The ONNX route: [-1, 1] images in, class ids out.
      ids = segmentation.OnnxSegmenter(out)(_pixels(hw) / 127.5 - 1)
    ref = _reference(name, hw)
    _assert_same_scores(self, ref, got)
    self.assertGreater(np.mean(ids == ref.argmax(-1)), 0.99)

  def test_command_names_a_missing_weight_file_in_one_line(self):
    with tempfile.TemporaryDirectory() as tmp:
      missing = os.path.join(tmp, 'missing.npz')
      result = subprocess.run(
          [sys.executable, '-m', 'oasis_jax.evaluation.segmenters.onnx_export',
           '--protocol=cityscapes', f'--weights={missing}', '--height=32',
           '--width=32', f'--output={tmp}/m.onnx'], capture_output=True,
          text=True)
    self.assertEqual(result.returncode, 1)
    fatal = [l for l in result.stderr.splitlines() if l.startswith('FATAL')]
    self.assertLen(fatal, 1)
    self.assertIn(missing, fatal[0])
    self.assertIn('--weights', fatal[0])


if __name__ == '__main__':
  absltest.main()
