"""End-to-end mIoU with the paper's segmenters on a tiny fake data set.

Each segmenter (weights from the parity fixtures' rule, written as the .npz
a user converts) segments generated and real images through
`evaluation.miou`; the confusion matrix must equal one computed here in
numpy from the segmenter's own outputs. The checkpoint mode
(`suite.evaluate_checkpoint`) is run once, with DRN-D-105.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from configs import tiny
import fid_test  # The shared tiny training run with FID.
from oasis_jax.evaluation import suite
from oasis_jax import main
from oasis_jax.runtime import sharding
from oasis_jax.evaluation import miou as miou_evaluator
from oasis_jax.evaluation.segmenters import networks
from oasis_jax.evaluation.segmenters import protocol as protocol_lib
import segmenter_fixtures

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TINY = os.path.join(_REPO, 'configs', 'tiny.py')
# The segmenters' own input normalisation (on 0..255 pixels) and channels.
_NORMALISE = {
    'drn_d_105': (False, 1 / 255, protocol_lib.CITYSCAPES_MEAN,
                  protocol_lib.CITYSCAPES_STD),
    'upernet101': (False, 1 / 255, protocol_lib.IMAGENET_MEAN,
                   protocol_lib.IMAGENET_STD),
    'deeplabv2_msc': (True, 1.0, protocol_lib.CAFFE_BGR_MEAN, (1, 1, 1))}


_weights_file = segmenter_fixtures.weights_npz


def _config(name: str, real: bool = False):
  config = tiny.get_config()  # 'synthetic', 4 classes, 0 don't care.
  config.eval.segmenter = name
  config.eval.segmenter_weights = _weights_file(name)
  config.eval.segmenter_real_images = real
  return config


def _numpy_confusion(name: str, images, labels, valid, num_classes: int):
  """The confusion matrix from the segmenter's outputs, by hand."""
  model, variables = networks.load(name, _weights_file(name))
  bgr, scale, mean, std = _NORMALISE[name]
  pixels = np.clip(np.round((np.asarray(images, np.float64) + 1) * 127.5),
                   0, 255)
  if bgr:
    pixels = pixels[..., ::-1]
  x = (pixels * scale - np.asarray(mean)) / np.asarray(std)
  scores = networks.scores(model, variables, jnp.asarray(x, jnp.float32),
                           labels.shape[1:])
  preds = np.asarray(scores).argmax(-1)[valid]
  labels = np.asarray(labels)[valid]
  keep = labels != 0  # The tiny data set's don't-care class.
  counts = np.bincount(labels[keep] * num_classes + preds[keep],
                       minlength=num_classes ** 2)
  return counts.reshape(num_classes, num_classes)


def _numpy_miou(conf) -> float:
  tp = np.diag(conf).astype(np.float64)
  union = conf.sum(0) + conf.sum(1) - tp
  return float(np.mean(tp[union > 0] / union[union > 0]))


def _batch(seed: int):
  rng = np.random.default_rng(seed)
  label = rng.integers(0, 4, (2, 32, 32)).astype(np.int32)
  image = rng.integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
  fake = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  return {'label': label, 'image': image, 'valid': np.array([True, False]),
          'index': np.arange(2, dtype=np.int32)}, fake


class SegmenterMiouTest(parameterized.TestCase):

  @parameterized.parameters('drn_d_105', 'upernet101', 'deeplabv2_msc')
  def test_confusion_equals_numpy(self, name):
    config = _config(name, real=name == 'drn_d_105')
    evaluator = miou_evaluator.MiouEvaluator(config, sharding.make_mesh(1),
                                             None)
    batches = [_batch(seed) for seed in (0, 1)]
    for batch, fake in batches:
      evaluator.add(batch, jnp.asarray(fake))
    results = evaluator.results()
    seg = evaluator._flax  # pylint: disable=protected-access
    n = seg.protocol.num_classes
    expected = sum(_numpy_confusion(name, fake, b['label'], b['valid'], n)
                   for b, fake in batches)
    np.testing.assert_array_equal(seg.confusion, expected)
    self.assertEqual(int(expected.sum()),
                     sum(int((b['label'][0] != 0).sum()) for b, _ in batches))
    self.assertAlmostEqual(results['miou'], _numpy_miou(expected), places=12)
    self.assertEqual(results['miou_segmenter'], name)
    self.assertEqual(results['miou_protocol'], 'synthetic/identity')
    if name == 'drn_d_105':
      real = sum(_numpy_confusion(name, b['image'] / 127.5 - 1, b['label'],
                                  b['valid'], n) for b, _ in batches)
      np.testing.assert_array_equal(seg.confusion_real, real)
      self.assertAlmostEqual(results['miou_real'], _numpy_miou(real),
                             places=12)

  def test_segmenter_must_fit_the_data_sets_protocol(self):
    config = _config('drn_d_105')
    config.data.name = 'ade20k'
    with self.assertRaisesRegex(ValueError, 'upernet101'):
      miou_evaluator.flax_segmenter_protocol(config, 19)

  def test_missing_weights_is_one_line_naming_file_and_key(self):
    config = tiny.get_config()
    config.eval.segmenter = 'deeplabv2_msc'
    config.eval.segmenter_weights = '/nonexistent/msc.npz'
    with self.assertRaisesRegex(
        FileNotFoundError, r'^/nonexistent/msc.npz: no such file; set '
        r'config\.eval\.segmenter_weights [^\n]*$'):
      miou_evaluator.check_segmenter_weights(config)


class TrainingEvaluateFnTest(absltest.TestCase):

  def test_fid_and_miou_share_the_images_and_reset(self):
    calls = []

    class FakeFid:

      def fid_of(self, variables, on_batch):
        calls.append(variables)
        on_batch({'label': 1}, 'images')
        return 12.5

    class FakeMiou:
      count = 0

      def reset(self):
        self.count = 0

      def add(self, batch, images):
        self.count += 1

      def results(self):
        return {'miou': 0.25 * self.count, 'miou_segmenter': 'drn_d_105'}

    state = mock.Mock(ema={'params': 1})
    fn = miou_evaluator.FidAndMiou(FakeFid(), FakeMiou())
    for _ in range(2):  # The confusion matrix restarts at each evaluation.
      self.assertEqual(fn(state, 2), {'fid': 12.5, 'miou': 0.25})
    self.assertEqual(calls, [{'params': 1}] * 2)

  def test_missing_segmenter_weights_stop_the_run_at_start_up(self):
    config = fid_test.fid_config(
        fid_test.fixture_weights())
    config.eval.segmenter = 'upernet101'
    config.eval.segmenter_weights = '/nonexistent/enc.pth,/nonexistent/dec.pth'
    with self.assertRaisesRegex(networks.MissingSegmenterWeightsError,
                                '^/nonexistent/enc.pth: no such file'):
      main.create_evaluate_fn(config, self.create_tempdir().full_path,
                              sharding.make_mesh(1))


class CheckpointModeTest(absltest.TestCase):

  def test_checkpoint_miou_equals_numpy_of_the_generated_images(self):
    trained = fid_test.trained_run()
    config = trained['config'].copy_and_resolve_references()
    config.eval.num_fid_images = 4
    config.eval.segmenter = 'drn_d_105'
    config.eval.segmenter_weights = _weights_file('drn_d_105')
    seen = []
    add = miou_evaluator.SegmenterMiou.add

    def spy(self, batch, images):
      seen.append((jax.device_get(batch['label']), batch['valid'].copy(),
                   np.asarray(jax.device_get(images))))
      return add(self, batch, images)

    with mock.patch.object(miou_evaluator.SegmenterMiou, 'add', spy):
      results = suite.evaluate_checkpoint(
          trained['workdir'], 'best', config=config,
          mesh=sharding.make_mesh(1), write=False)
    self.assertNotEmpty(seen)
    expected = sum(_numpy_confusion('drn_d_105', images, labels, valid, 19)
                   for labels, valid, images in seen)
    self.assertEqual(int(expected.sum()), sum(
        int((labels[valid] != 0).sum()) for labels, valid, _ in seen))
    self.assertAlmostEqual(results['miou'], _numpy_miou(expected), places=12)
    self.assertEqual(results['miou_segmenter'], 'drn_d_105')
    self.assertIn('fid', results)


  def test_command_line_flags(self):
    trained = fid_test.trained_run()
    workdir = tempfile.mkdtemp(prefix='segmenter_cli_')
    shutil.copytree(trained['workdir'], workdir, dirs_exist_ok=True)
    command = [
        sys.executable, '-m', 'oasis_jax.evaluate', f'--config={_TINY}',
        f'--workdir={workdir}', '--checkpoint=latest',
        '--segmenter_network=drn_d_105',
        f'--segmenter_weights={_weights_file("drn_d_105")}',
        '--config.eval.num_fid_images=2',
        '--config.eval.segmenter_dtype=bfloat16',
        '--config.eval.segmenter_real_images=True']
    env = dict(os.environ,
               XLA_FLAGS='--xla_force_host_platform_device_count=1',
               PYTHONPATH=_REPO)
    result = subprocess.run(command, env=env, capture_output=True, text=True,
                            check=False, timeout=600)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    with open(os.path.join(workdir, 'metrics_latest.json')) as f:
      written = json.load(f)
    self.assertEqual(written['miou_segmenter'], 'drn_d_105')
    self.assertEqual(written['miou_protocol'], 'synthetic/identity')
    self.assertBetween(written['miou'], 0.0, 1.0)
    self.assertBetween(written['miou_real'], 0.0, 1.0)


if __name__ == '__main__':
  absltest.main()
