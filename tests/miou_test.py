"""Tests of evaluation/miou.py: protocols, D's segmentation, confusion."""

import math
import types
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jax.numpy as jnp
import numpy as np

from configs import lvis as lvis_config
from configs import tiny
from data_pipelines import testing
from oasis_jax.evaluation import segmentation
from oasis_jax import models
from oasis_jax.runtime import sharding
from oasis_jax.evaluation import miou as miou_evaluator


class MiouTest(parameterized.TestCase):

  def test_identity_protocol_ignores_dontcare(self):
    protocol = miou_evaluator.segmentation_protocol(tiny.get_config())
    self.assertEqual(protocol.num_classes, 4)
    self.assertEqual(protocol.input_size, (32, 32))
    np.testing.assert_array_equal(protocol.map_labels([0, 1, 2, 3]),
                                  [segmentation.IGNORE_ID, 1, 2, 3])

  def test_discriminator_segmentation_is_argmax_of_real_class_logits(self):
    logits = np.zeros((1, 1, 3, 5), np.float32)  # 4 classes + fake (0).
    logits[0, 0, 0, [0, 3]] = [9.0, 1.0]  # Fake channel ignored: class 2.
    logits[0, 0, 1, 1] = 1.0  # Class 0.
    logits[0, 0, 2, [0, 4]] = [10.0, 2.0]  # Class 3.
    seen = {}

    def apply(variables, image, train):
      seen.update(variables=variables, shape=image.shape, train=train)
      return jnp.asarray(logits)

    fake_d = types.SimpleNamespace(apply=apply)
    with mock.patch.object(models, 'make_discriminator',
                           return_value=fake_d):
      out = miou_evaluator.discriminator_segmentation(
          {'params': 1}, jnp.zeros((1, 1, 3, 3)), config=tiny.get_config())
    np.testing.assert_array_equal(out, [[[2, 0, 3]]])
    self.assertEqual(seen, {'variables': {'params': 1}, 'shape': (1, 1, 3, 3),
                            'train': False})

  def test_lvis_miou_by_frequency_group(self):
    root = self.create_tempdir().full_path
    testing.write_lvis_tree(root)
    config = lvis_config.get_config()
    config.data.root = root
    protocol = miou_evaluator.segmentation_protocol(config)  # Identity.
    seg = segmentation.confusion_matrix([1100, 1100, 1100, 1100, 2, 500],
                                        [1100, 1100, 1100, 7, 2, 3], 1204)
    # rare 1100: 3 / 4; frequent 2: 1, 7: 0, 3: 0 -> 1 / 3; common 500: 0.
    d = segmentation.confusion_matrix([2, 900], [2, 900], 1204)
    got = miou_evaluator.group_mious(config, protocol, seg, d, 0)
    self.assertAlmostEqual(got['miou_rare'], 0.75)
    self.assertAlmostEqual(got['miou_frequent'], 1 / 3)
    self.assertAlmostEqual(got['miou_common'], 0.0)
    self.assertEqual(got['miou_discriminator_frequent'], 1.0)
    self.assertEqual(got['miou_discriminator_rare'], 1.0)  # 900 is rare.
    self.assertTrue(math.isnan(got['miou_discriminator_common']))
    self.assertNotIn('miou_rare', miou_evaluator.group_mious(
        config, protocol, None, d, 0))
    self.assertNotIn('miou_discriminator_rare', miou_evaluator.group_mious(
        config, protocol, seg, None, 0))
    self.assertEqual(miou_evaluator.group_mious(tiny.get_config(), protocol,
                                                seg, d, 0), {})

  def test_known_data_sets_keep_their_protocol(self):
    config = tiny.get_config()
    config.data.name, config.data.num_classes = 'ade20k', 151
    self.assertIs(miou_evaluator.segmentation_protocol(config),
                  segmentation.PROTOCOLS['ade20k'])

  def test_dontcare_id_is_the_configs(self):
    config = tiny.get_config()
    self.assertEqual(miou_evaluator.dontcare_id(config), 0)
    config.data.dontcare_id = -1
    self.assertIsNone(miou_evaluator.dontcare_id(config))
    protocol = miou_evaluator.segmentation_protocol(config)
    np.testing.assert_array_equal(protocol.map_labels([0, 1, 2, 3]),
                                  [0, 1, 2, 3])

  def test_evaluator_counts_the_valid_pixels_of_each_batch(self):
    config = tiny.get_config()
    logits = np.zeros((2, 2, 2, 5), np.float32)
    logits[..., 2] = 1.0  # D says class 1 everywhere.
    fake_d = types.SimpleNamespace(
        apply=lambda variables, image, train: jnp.asarray(logits))
    with mock.patch.object(models, 'make_discriminator',
                           return_value=fake_d):
      evaluator = miou_evaluator.MiouEvaluator(
          config, sharding.make_mesh(1), {'params': {}})
      label = np.array([[[1, 1], [2, 0]], [[3, 3], [3, 3]]], np.int32)
      evaluator.add({'label': label, 'valid': np.array([True, False])},
                    jnp.zeros((2, 2, 2, 3)))
    # Valid image 0: class 1 right on 2 px, class 2 wrong on 1, 0 ignored.
    # IoU(1) = 2 / 3, IoU(2) = 0; classes 3 (never seen) are left out.
    self.assertAlmostEqual(evaluator.results()['miou_discriminator'],
                           (2 / 3 + 0) / 2)


if __name__ == '__main__':
  absltest.main()
