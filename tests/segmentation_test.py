"""Tests of segmentation.py: confusion matrix, mIoU, protocols, segmenters."""

import dataclasses
import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from oasis_jax.evaluation import segmentation

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
        segmentation.confusion_matrix(labels, preds, 3),
        [[1, 1, 0], [0, 2, 0], [1, 0, 1]])

  def test_ignored_label_is_not_counted(self):
    labels = np.array([0, 255, 1, 255])
    preds = np.array([0, 1, 0, 2])
    conf = segmentation.confusion_matrix(labels, preds, 3, ignore_index=255)
    np.testing.assert_array_equal(conf, [[1, 0, 0], [1, 0, 0], [0, 0, 0]])

  @parameterized.parameters(([0, 3], [0, 0]), ([0, 1], [0, 3]),
                            ([-1, 0], [0, 0]))
  def test_ids_out_of_range_are_errors(self, labels, preds):
    with self.assertRaisesRegex(ValueError, 'outside'):
      segmentation.confusion_matrix(np.array(labels), np.array(preds), 3)

  def test_mean_iou_known_answer(self):
    conf = segmentation.confusion_matrix([0, 0, 1, 1, 2, 2],
                                         [0, 1, 1, 1, 2, 0], 4)
    # IoU: 1/3, 2/3, 1/2; class 3 occurs nowhere and is left out.
    np.testing.assert_allclose(segmentation.per_class_iou(conf)[:3],
                               [1 / 3, 2 / 3, 1 / 2])
    self.assertTrue(np.isnan(segmentation.per_class_iou(conf)[3]))
    self.assertAlmostEqual(segmentation.mean_iou(conf), 0.5)

  def test_dont_care_class_inside_the_matrix_is_ignored(self):
    # Class 0 is "don't care": its pixels are dropped; predicting 0 on a
    # real pixel still costs that pixel's class.
    labels = np.array([0, 0, 1, 1, 2, 2])
    preds = np.array([1, 2, 1, 0, 2, 2])
    conf = segmentation.confusion_matrix(labels, preds, 3, ignore_index=0)
    # IoU(1) = 1 / 2 (one pixel predicted 0), IoU(2) = 2 / 2.
    self.assertAlmostEqual(segmentation.mean_iou(conf, ignore_index=0), 0.75)

  def test_group_mean_iou_known_answer(self):
    conf = segmentation.confusion_matrix([0, 0, 1, 1, 2, 2],
                                         [0, 1, 1, 1, 2, 0], 5)
    # IoU: 1/3, 2/3, 1/2, NaN, NaN (classes 3, 4 occur nowhere).
    got = segmentation.group_mean_iou(
        conf, {'rare': [0, 2], 'common': [1, 3], 'frequent': [4, 9]})
    self.assertAlmostEqual(got['rare'], (1 / 3 + 1 / 2) / 2)
    self.assertAlmostEqual(got['common'], 2 / 3)  # 3 left out.
    self.assertTrue(np.isnan(got['frequent']))  # 9 is outside the matrix.

  def test_perfect_prediction_gives_one_and_empty_gives_nan(self):
    labels = np.random.default_rng(0).integers(0, 5, size=(2, 8, 8))
    conf = segmentation.confusion_matrix(labels, labels, 5)
    self.assertEqual(segmentation.mean_iou(conf), 1.0)
    self.assertTrue(np.isnan(segmentation.mean_iou(np.zeros((3, 3)))))


class ProtocolTest(parameterized.TestCase):

  def test_cityscapes_label_ids_to_train_ids(self):
    protocol = segmentation.get_protocol('cityscapes')
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
    protocol = segmentation.get_protocol(name)
    self.assertEqual(protocol.num_classes, classes)
    np.testing.assert_array_equal(protocol.map_labels([0, 1, last]),
                                  [255, 0, last - 1])

  def test_unknown_protocol(self):
    with self.assertRaisesRegex(ValueError, 'cityscapes'):
      segmentation.get_protocol('mnist')


def _color_images(ids, palette):
  """Images in [-1, 1] whose pixel colours encode class ids."""
  return (palette[ids] / 127.5 - 1).astype(np.float32)


_PALETTE = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.float32)


class SegmentationTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(0)
    self.ids = rng.integers(0, 3, size=(2, 6, 10))  # Segmenter classes.
    self.protocol = segmentation.SegmentationProtocol(
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
    conf = segmentation.segmentation_confusion(
        segmenter, _color_images(flipped, _PALETTE), self.labels,
        self.protocol)
    expected = segmentation.confusion_matrix(self.ids[:, 1:], flipped[:, 1:],
                                             3)
    np.testing.assert_array_equal(conf, expected)
    conf = segmentation.segmentation_confusion(segmenter, images, self.labels,
                                               self.protocol)
    self.assertEqual(segmentation.mean_iou(conf), 1.0)
    self.assertEqual(conf.sum(), 2 * 5 * 10)  # Row 0 is don't care.

  def test_scores_and_low_resolution_predictions(self):
    # A segmenter at half resolution that returns scores [B, h, w, C]; its
    # predictions are resized (nearest) to the label size.
    protocol = dataclasses.replace(self.protocol, input_size=(3, 5))
    labels = np.repeat(np.repeat(self.ids[:, :3, :5], 2, 1), 2, 2) + 1

    def segmenter(images):
      self.assertEqual(images.shape[1:3], (3, 5))
      return np.eye(3)[self.ids[:, :3, :5]]

    conf = segmentation.segmentation_confusion(
        segmenter, np.zeros((2, 6, 10, 3), np.float32), labels, protocol)
    self.assertEqual(segmentation.mean_iou(conf), 1.0)
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
    segmenter = segmentation.OnnxSegmenter(path, mean=(0.9, 0.0, 0.0),
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

    protocol = segmentation.SegmentationProtocol(
        'toy', 3, (5, 7), label_map=np.array([255, 0, 1, 2]))
    labels = expected + 1
    labels[0] = 0  # The first image is don't care.
    labels[1, 0, 0] = (expected[1, 0, 0] + 1) % 3 + 1  # One wrong pixel.
    conf = segmentation.segmentation_confusion(segmenter, images, labels,
                                               protocol)
    self.assertEqual(conf.sum(), 5 * 7)
    self.assertEqual(np.trace(conf), 5 * 7 - 1)
    np.testing.assert_array_equal(
        conf, segmentation.confusion_matrix(protocol.map_labels(labels),
                                            expected, 3, ignore_index=255))


if __name__ == '__main__':
  absltest.main()
