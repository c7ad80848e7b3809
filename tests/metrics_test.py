"""Tests of mIoU (confusion matrix, protocols, segmenters) and MS-SSIM."""

import dataclasses
import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from oasis_jax.evaluation import metrics

try:
  import onnx  # pylint: disable=g-import-not-at-top
  from onnx import helper  # pylint: disable=g-import-not-at-top
  import onnxruntime  # pylint: disable=g-import-not-at-top,unused-import
  _ONNX_ERROR = None
except ImportError as e:
  _ONNX_ERROR = f'onnx/onnxruntime not importable: {e}'


class ConfusionMatrixTest(parameterized.TestCase):

  def test_counts_true_rows_and_predicted_columns(self):
    labels = np.array([[0, 0, 1], [1, 2, 2]])
    preds = np.array([[0, 1, 1], [1, 2, 0]])
    np.testing.assert_array_equal(
        metrics.confusion_matrix(labels, preds, 3),
        [[1, 1, 0], [0, 2, 0], [1, 0, 1]])

  def test_ignored_label_is_not_counted(self):
    labels = np.array([0, 255, 1, 255])
    preds = np.array([0, 1, 0, 2])
    conf = metrics.confusion_matrix(labels, preds, 3, ignore_index=255)
    np.testing.assert_array_equal(conf, [[1, 0, 0], [1, 0, 0], [0, 0, 0]])

  @parameterized.parameters(([0, 3], [0, 0]), ([0, 1], [0, 3]),
                            ([-1, 0], [0, 0]))
  def test_ids_out_of_range_are_errors(self, labels, preds):
    with self.assertRaisesRegex(ValueError, 'outside'):
      metrics.confusion_matrix(np.array(labels), np.array(preds), 3)

  def test_mean_iou_known_answer(self):
    conf = metrics.confusion_matrix([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0], 4)
    # IoU: 1/3, 2/3, 1/2; class 3 occurs nowhere and is left out.
    np.testing.assert_allclose(metrics.per_class_iou(conf)[:3],
                               [1 / 3, 2 / 3, 1 / 2])
    self.assertTrue(np.isnan(metrics.per_class_iou(conf)[3]))
    self.assertAlmostEqual(metrics.mean_iou(conf), 0.5)

  def test_dont_care_class_inside_the_matrix_is_ignored(self):
    # Class 0 is "don't care": its pixels are dropped; predicting 0 on a
    # real pixel still costs that pixel's class.
    labels = np.array([0, 0, 1, 1, 2, 2])
    preds = np.array([1, 2, 1, 0, 2, 2])
    conf = metrics.confusion_matrix(labels, preds, 3, ignore_index=0)
    # IoU(1) = 1 / 2 (one pixel predicted 0), IoU(2) = 2 / 2.
    self.assertAlmostEqual(metrics.mean_iou(conf, ignore_index=0), 0.75)

  def test_group_mean_iou_known_answer(self):
    conf = metrics.confusion_matrix([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0], 5)
    # IoU: 1/3, 2/3, 1/2, NaN, NaN (classes 3, 4 occur nowhere).
    got = metrics.group_mean_iou(
        conf, {'rare': [0, 2], 'common': [1, 3], 'frequent': [4, 9]})
    self.assertAlmostEqual(got['rare'], (1 / 3 + 1 / 2) / 2)
    self.assertAlmostEqual(got['common'], 2 / 3)  # 3 left out.
    self.assertTrue(np.isnan(got['frequent']))  # 9 is outside the matrix.

  def test_perfect_prediction_gives_one_and_empty_gives_nan(self):
    labels = np.random.default_rng(0).integers(0, 5, size=(2, 8, 8))
    self.assertEqual(
        metrics.mean_iou(metrics.confusion_matrix(labels, labels, 5)), 1.0)
    self.assertTrue(np.isnan(metrics.mean_iou(np.zeros((3, 3)))))


class ProtocolTest(parameterized.TestCase):

  def test_cityscapes_label_ids_to_train_ids(self):
    protocol = metrics.get_protocol('cityscapes')
    self.assertEqual(protocol.num_classes, 19)
    self.assertEqual(protocol.input_size, (256, 512))
    ids = np.array([7, 8, 11, 26, 33, 0, 1, 6, 9, 34, 255, -1])
    np.testing.assert_array_equal(
        protocol.map_labels(ids),
        [0, 1, 2, 13, 18, 255, 255, 255, 255, 255, 255, 255])
    self.assertEqual(sorted(set(protocol.label_map) - {255}), list(range(19)))

  @parameterized.parameters(('ade20k', 150, 150), ('coco_stuff', 182, 182))
  def test_oasis_ids_shift_by_one_and_zero_is_ignored(self, name, classes,
                                                      last):
    protocol = metrics.get_protocol(name)
    self.assertEqual(protocol.num_classes, classes)
    np.testing.assert_array_equal(protocol.map_labels([0, 1, last]),
                                  [255, 0, last - 1])

  def test_unknown_protocol(self):
    with self.assertRaisesRegex(ValueError, 'cityscapes'):
      metrics.get_protocol('mnist')


def _color_images(ids, palette):
  """Images in [-1, 1] whose pixel colours encode class ids."""
  return (palette[ids] / 127.5 - 1).astype(np.float32)


_PALETTE = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.float32)


class SegmentationTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(0)
    self.ids = rng.integers(0, 3, size=(2, 6, 10))  # Segmenter classes.
    self.protocol = metrics.SegmentationProtocol(
        'toy', num_classes=3, input_size=(6, 10),
        label_map=np.array([255, 0, 1, 2]))  # Dataset id 0: don't care.
    self.labels = self.ids + 1
    self.labels[:, 0, :] = 0

  def test_python_callable_segmenter(self):
    def segmenter(images):  # Channel with the largest value = class.
      return np.argmax(images, axis=-1)

    images = _color_images(self.ids, _PALETTE)
    flipped = self.ids.copy()
    flipped[:, 1, :] = (flipped[:, 1, :] + 1) % 3  # Wrong row of the images.
    conf = metrics.segmentation_confusion(
        segmenter, _color_images(flipped, _PALETTE), self.labels,
        self.protocol)
    expected = metrics.confusion_matrix(self.ids[:, 1:], flipped[:, 1:], 3)
    np.testing.assert_array_equal(conf, expected)
    conf = metrics.segmentation_confusion(segmenter, images, self.labels,
                                          self.protocol)
    self.assertEqual(metrics.mean_iou(conf), 1.0)
    self.assertEqual(conf.sum(), 2 * 5 * 10)  # Row 0 is don't care.

  def test_scores_and_low_resolution_predictions(self):
    # A segmenter at half resolution that returns scores [B, h, w, C]; its
    # predictions are resized (nearest) to the label size.
    protocol = dataclasses.replace(self.protocol, input_size=(3, 5))
    labels = np.repeat(np.repeat(self.ids[:, :3, :5], 2, 1), 2, 2) + 1

    def segmenter(images):
      self.assertEqual(images.shape[1:3], (3, 5))
      return np.eye(3)[self.ids[:, :3, :5]]

    conf = metrics.segmentation_confusion(
        segmenter, np.zeros((2, 6, 10, 3), np.float32), labels, protocol)
    self.assertEqual(metrics.mean_iou(conf), 1.0)
    self.assertEqual(conf.sum(), 2 * 6 * 10)


def _write_onnx(path, with_argmax):
  """A 1x1 conv segmenter: class scores = normalised RGB channels."""
  weight = helper.make_tensor('w', onnx.TensorProto.FLOAT, [3, 3, 1, 1],
                              np.eye(3, dtype=np.float32).reshape(-1))
  nodes = [helper.make_node('Conv', ['x', 'w'], ['scores'])]
  output = helper.make_tensor_value_info('scores', onnx.TensorProto.FLOAT,
                                         ['b', 3, 'h', 'w'])
  if with_argmax:
    nodes.append(helper.make_node('ArgMax', ['scores'], ['ids'], axis=1,
                                  keepdims=0))
    output = helper.make_tensor_value_info('ids', onnx.TensorProto.INT64,
                                           ['b', 'h', 'w'])
  graph = helper.make_graph(
      nodes, 'toy_segmenter',
      [helper.make_tensor_value_info('x', onnx.TensorProto.FLOAT,
                                     ['b', 3, 'h', 'w'])],
      [output], initializer=[weight])
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)])
  model.ir_version = 8
  onnx.checker.check_model(model)
  onnx.save(model, path)


class OnnxSegmenterTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    if _ONNX_ERROR:
      self.skipTest(_ONNX_ERROR)
    self.tmp = tempfile.mkdtemp()

  @parameterized.parameters(False, True)
  def test_onnx_segmenter_predicts_and_scores(self, with_argmax):
    path = os.path.join(self.tmp, 'seg.onnx')
    _write_onnx(path, with_argmax)
    # Uneven mean/std: the normalisation changes which channel wins.
    segmenter = metrics.OnnxSegmenter(path, mean=(0.9, 0.0, 0.0),
                                      std=(0.5, 1.0, 2.0))
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, size=(2, 5, 7, 3)).astype(np.float32)
    x01 = (images + 1) / 2
    normalised = (x01 - np.array([0.9, 0, 0])) / np.array([0.5, 1, 2])
    expected = normalised.argmax(-1)
    self.assertGreater(len(np.unique(expected)), 1)
    preds = segmenter(images)
    np.testing.assert_array_equal(preds, expected)
    self.assertEqual(preds.shape, (2, 5, 7))

    protocol = metrics.SegmentationProtocol(
        'toy', 3, (5, 7), label_map=np.array([255, 0, 1, 2]))
    labels = expected + 1
    labels[0] = 0  # The first image is don't care.
    labels[1, 0, 0] = (expected[1, 0, 0] + 1) % 3 + 1  # One wrong pixel.
    conf = metrics.segmentation_confusion(segmenter, images, labels,
                                          protocol)
    self.assertEqual(conf.sum(), 5 * 7)
    self.assertEqual(np.trace(conf), 5 * 7 - 1)
    np.testing.assert_array_equal(
        conf, metrics.confusion_matrix(protocol.map_labels(labels),
                                       expected, 3, ignore_index=255))


def _ssim_reference(x, y, max_val):
  """Single-scale mean SSIM and CS in float64 (valid Gaussian filtering)."""
  g = np.exp(-(np.arange(11) - 5.0)**2 / (2 * 1.5**2))
  g /= g.sum()

  def blur(a):  # a: [H, W, C]
    a = np.lib.stride_tricks.sliding_window_view(a, 11, axis=0) @ g
    return np.lib.stride_tricks.sliding_window_view(a, 11, axis=1) @ g

  c1, c2 = (0.01 * max_val)**2, (0.03 * max_val)**2
  mx, my = blur(x), blur(y)
  vx, vy = blur(x * x) - mx**2, blur(y * y) - my**2
  cxy = blur(x * y) - mx * my
  cs = (2 * cxy + c2) / (vx + vy + c2)
  return ((2 * mx * my + c1) / (mx**2 + my**2 + c1) * cs).mean(), cs.mean()


def _ms_ssim_reference(x, y, max_val=2.0):
  x, y = x.astype(np.float64), y.astype(np.float64)
  weights = metrics.MS_SSIM_WEIGHTS
  value = 1.0
  for level, weight in enumerate(weights):
    ssim, cs = _ssim_reference(x, y, max_val)
    if level == len(weights) - 1:
      value *= max(ssim, 0)**weight
    else:
      value *= max(cs, 0)**weight
      h, w, c = x.shape  # Even sizes: 2x2 means.
      x = x.reshape(h // 2, 2, w // 2, 2, c).mean((1, 3))
      y = y.reshape(h // 2, 2, w // 2, 2, c).mean((1, 3))
  return value


def _smooth_images(rng, n, size=176):
  """Blurry random images in [-1, 1] (so that every scale has structure)."""
  coarse = rng.uniform(-1, 1, size=(n, size // 8, size // 8, 3))
  return np.repeat(np.repeat(coarse, 8, 1), 8, 2).astype(np.float32)


class MsSsimTest(parameterized.TestCase):

  def test_equal_images_give_one(self):
    x = _smooth_images(np.random.default_rng(0), 2)
    np.testing.assert_allclose(metrics.ms_ssim(x, x), [1.0, 1.0], atol=1e-6)

  @parameterized.parameters((0.05, 0.0), (0.3, 0.0), (0.1, 0.8))
  def test_matches_float64_reference(self, noise, mix):
    rng = np.random.default_rng(1)
    x = _smooth_images(rng, 2)
    y = (1 - mix) * x + mix * _smooth_images(rng, 2)  # Mix in other images.
    y = np.clip(y + rng.normal(scale=noise, size=x.shape), -1, 1).astype(
        np.float32)
    ours = np.asarray(metrics.ms_ssim(x, y))
    reference = [_ms_ssim_reference(x[i], y[i]) for i in range(2)]
    np.testing.assert_allclose(ours, reference, atol=2e-5)
    self.assertAlmostEqual(float(metrics.ms_ssim(y[0], x[0])), ours[0],
                           places=5)  # Symmetric; unbatched input.

  def test_more_noise_means_lower_ms_ssim(self):
    rng = np.random.default_rng(2)
    x = _smooth_images(rng, 1)
    values = [
        float(metrics.ms_ssim(x, np.clip(x + rng.normal(scale=s, size=x.shape),
                                         -1, 1))[0]) for s in (0.02, 0.2, 0.8)
    ]
    self.assertGreater(values[0], values[1])
    self.assertGreater(values[1], values[2])
    self.assertLess(values[0], 1.0)

  def test_small_images_are_an_error(self):
    with self.assertRaisesRegex(ValueError, '161'):
      metrics.ms_ssim(np.zeros((1, 64, 64, 3)), np.zeros((1, 64, 64, 3)))

  def test_mean_pairwise_ms_ssim(self):
    rng = np.random.default_rng(3)
    images = _smooth_images(rng, 3)
    expected = np.mean(metrics.ms_ssim(images[[0, 0, 1]], images[[1, 2, 2]]))
    self.assertAlmostEqual(metrics.mean_pairwise_ms_ssim(images, batch_size=2),
                           expected, places=6)
    same = np.repeat(images[:1], 3, axis=0)
    self.assertAlmostEqual(metrics.mean_pairwise_ms_ssim(same), 1.0, places=5)
    with self.assertRaisesRegex(ValueError, 'at least 2'):
      metrics.mean_pairwise_ms_ssim(images[:1])


if __name__ == '__main__':
  absltest.main()
