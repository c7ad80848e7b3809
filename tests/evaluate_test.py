"""Tests of the evaluation command line's checkpoint mode."""

import json
import os
import subprocess
import sys

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import onnx
from onnx import helper
from onnx import TensorProto

import fid_test  # The shared tiny training run with FID.
from oasis_jax.training import input_pipeline
from oasis_jax.evaluation import fid as fid_evaluator

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TIMEOUT_S = 300
_PREDICTED = 1  # The test segmenter's answer, everywhere.


def write_constant_segmenter(path: str, num_classes: int,
                             predicted: int) -> None:
  """An ONNX 1x1 conv whose scores make `predicted` win at every pixel."""
  weight = np.zeros((num_classes, 3, 1, 1), np.float32)
  bias = np.zeros((num_classes,), np.float32)
  bias[predicted] = 5.0
  graph = helper.make_graph(
      [helper.make_node('Conv', ['image', 'w', 'b'], ['scores'])],
      'constant_segmenter',
      [helper.make_tensor_value_info('image', TensorProto.FLOAT,
                                     ['batch', 3, 'height', 'width'])],
      [helper.make_tensor_value_info('scores', TensorProto.FLOAT,
                                     ['batch', num_classes, 'height',
                                      'width'])],
      initializer=[helper.make_tensor('w', TensorProto.FLOAT, weight.shape,
                                      weight.ravel()),
                   helper.make_tensor('b', TensorProto.FLOAT, bias.shape,
                                      bias)])
  model = helper.make_model(graph,
                            opset_imports=[helper.make_opsetid('', 13)])
  onnx.checker.check_model(model)
  onnx.save(model, path)


def _expected_constant_miou(config, predicted: int) -> float:
  """mIoU of predicting `predicted` everywhere, from the label maps by hand.

  Class 0 (don't care) is not counted; `predicted` has IoU = its pixels /
  all counted pixels; other classes present have IoU 0; absent ones are
  left out of the mean.
  """
  data_iter = input_pipeline.create_eval_iterator(
      config, batch_size=4, num_examples=config.eval.num_fid_images,
      process_index=0, process_count=1)
  labels = np.concatenate([b['label'][b['valid']] for b in data_iter])
  counted = labels[labels != config.data.dontcare_id]
  present = set(np.unique(counted).tolist()) | {predicted}
  return (np.sum(counted == predicted) / counted.size) / len(present)


class CheckpointModeTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.trained = fid_test.trained_run()
    workdir = cls.trained['workdir']
    cls.cache = os.path.join(workdir, fid_evaluator.FID_STATS_DIR)
    cls.cache_before = {name: os.stat(os.path.join(cls.cache, name))
                        .st_mtime_ns for name in os.listdir(cls.cache)}
    cls.segmenter = os.path.join(cls.trained['root'], 'segmenter.onnx')
    write_constant_segmenter(cls.segmenter, 4, _PREDICTED)
    config = os.path.join(_REPO, 'configs', 'tiny.py')
    config_values = cls.trained['config'].eval
    command = [
        sys.executable, '-m', 'oasis_jax.evaluate', f'--config={config}',
        f'--workdir={workdir}', '--checkpoint=best',
        f'--segmenter={cls.segmenter}', '--num_diversity_maps=2',
        '--num_diversity_samples=3',
        '--config.eval.fid_every_steps=2', '--config.eval.num_fid_images=4',
        f'--config.eval.inception_weights={config_values.inception_weights}',
        '--config.eval.verify_inception_weights=False']
    # One device, as in the training run: the compiled programs are cached.
    env = dict(os.environ,
               XLA_FLAGS='--xla_force_host_platform_device_count=1',
               PYTHONPATH=_REPO)
    cls.result = subprocess.run(command, cwd=cls.trained['root'], env=env,
                                capture_output=True, text=True, check=False,
                                timeout=_TIMEOUT_S)
    cls.path = os.path.join(workdir, 'metrics_best.json')

  def setUp(self):
    super().setUp()
    self.assertEqual(self.result.returncode, 0, self.result.stderr[-5000:])

  def _metrics(self):
    with open(self.path) as f:
      return json.load(f)

  def test_writes_and_prints_the_metrics_json(self):
    written = self._metrics()
    for key in ('fid', 'miou', 'miou_discriminator', 'diversity_ms_ssim',
                'step', 'checkpoint'):
      self.assertIn(key, written)
    self.assertEqual(written['checkpoint'], 'best')
    self.assertEqual(written['generator'], 'ema')
    printed = self.result.stdout[self.result.stdout.index('{'):]
    self.assertEqual(json.loads(printed), written)

  def test_fid_of_best_checkpoint_reproduces_the_training_fid(self):
    written, fids = self._metrics(), self.trained['fids']
    best_step = min(fids, key=fids.get)
    self.assertEqual(written['step'], best_step)
    self.assertEqual(written['num_images'], 4)
    self.assertTrue(np.isfinite(written['fid']))
    self.assertAlmostEqual(written['fid'] / fids[best_step], 1.0, places=4)

  def test_real_statistics_come_from_the_cache(self):
    after = {name: os.stat(os.path.join(self.cache, name)).st_mtime_ns
             for name in os.listdir(self.cache)}
    self.assertEqual(after, self.cache_before)
    self.assertIn('FID: real statistics from the cache', self.result.stderr)

  def test_segmenter_miou_matches_hand_count(self):
    expected = _expected_constant_miou(self.trained['config'], _PREDICTED)
    self.assertAlmostEqual(self._metrics()['miou'], expected, places=6)
    self.assertEqual(self._metrics()['miou_protocol'], 'synthetic')

  def test_discriminator_miou_and_diversity_are_in_range(self):
    written = self._metrics()
    self.assertBetween(written['miou_discriminator'], 0.0, 1.0)
    self.assertBetween(written['diversity_ms_ssim'], -1.0, 1.0)
    self.assertEqual(written['diversity_num_maps'], 2)
    self.assertEqual(written['diversity_num_samples'], 3)
    self.assertIn('32x32 -> 176x176', written['diversity_ms_ssim_input'])


if __name__ == '__main__':
  absltest.main()
