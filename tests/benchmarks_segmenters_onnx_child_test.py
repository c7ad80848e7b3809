"""Tests of the ONNX route's memory process of benchmarks/segmenters.py."""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

onnx = pytest.importorskip('onnx')
segmenters_onnx_child = pytest.importorskip(
    'benchmarks.segmenters_onnx_child')  # Needs onnxruntime.

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _doubling_model(hw) -> bytes:
  """`scores = images + images`: the graph interface the child runs."""
  helper = onnx.helper
  info = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT,
                                        ['batch', 3, *hw])
          for n in ('images', 'scores')]
  graph = helper.make_graph(
      [helper.make_node('Add', ['images', 'images'], ['scores'])], 'double',
      info[:1], info[1:])
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid('',
                                                                      18)])
  model.ir_version = 9
  return model.SerializeToString()


def test_child_reports_its_own_peak_not_its_parents():
  # A buffer of 300 MiB raises this process's peak; ru_maxrss would carry
  # it over into the child, VmHWM does not.
  ballast = np.ones(300 * 2**20 // 8)
  with tempfile.TemporaryDirectory() as tmp:
    paths = [os.path.join(tmp, f'{i}.onnx') for i in range(2)]
    for path, hw in zip(paths, ((8, 8), (16, 12))):
      with open(path, 'wb') as f:
        f.write(_doubling_model(hw))
    out = subprocess.run(
        [sys.executable, '-m', 'benchmarks.segmenters_onnx_child',
         f'--models={",".join(paths)}', '--batch_size=2', '--threads=1'],
        cwd=_ROOT, check=True, capture_output=True, text=True).stdout
  report = json.loads(out.strip().splitlines()[-1])
  assert ballast.sum() > 0
  assert segmenters_onnx_child.peak_rss_mib() > 300
  assert 0 < report['rss_after_imports_mib'] < 300
  assert (report['rss_after_imports_mib'] <= report['rss_after_setup_mib']
          <= report['peak_rss_mib'])


def test_session_uses_the_core_count_by_default():
  session = segmenters_onnx_child.session(_doubling_model((4, 4)))
  x = np.arange(48, dtype=np.float32).reshape(1, 3, 4, 4)
  np.testing.assert_array_equal(
      session.run(['scores'], {'images': x})[0], 2 * x)
  assert session.get_session_options().intra_op_num_threads == os.cpu_count()
