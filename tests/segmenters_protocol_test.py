"""Tests of the segmenters' per-data-set protocols and `segment`."""

import functools
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from oasis_jax.evaluation.segmenters import drn
from oasis_jax.evaluation.segmenters import layers
from oasis_jax.evaluation.segmenters import networks
from oasis_jax.evaluation.segmenters import protocol
import segmenter_fixtures


def _np_confusion(labels, preds, n):
  labels, preds = np.asarray(labels).ravel(), np.asarray(preds).ravel()
  keep = (labels >= 0) & (labels < n)
  return np.bincount(labels[keep] * n + preds[keep],
                     minlength=n * n).reshape(n, n)


@functools.cache
def _drn_variables():
  """DRN-D-105 with the shared fixture's rule-filled weights (19 classes)."""
  meta = segmenter_fixtures.read_meta(segmenter_fixtures.SHARED_DIR /
                                      'drn_d_105')
  return drn.from_state_dict(segmenter_fixtures.state_dicts(meta)['model'])


class ProtocolTableTest(parameterized.TestCase):

  def test_defaults_are_the_reference_paths(self):
    self.assertEqual(protocol.get('cityscapes').network, 'drn_d_105')
    self.assertEqual(protocol.get('ade20k').name, 'ade20k/csail_multiscale')
    self.assertEqual(protocol.get('coco_stuff').name,
                     'coco_stuff/deeplab_msc')
    self.assertEqual(protocol.get('coco_stuff', 'imaginaire').long_side, 512)

  def test_unknown_names(self):
    with self.assertRaisesRegex(ValueError, 'ade20k'):
      protocol.get('lvis')
    with self.assertRaisesRegex(ValueError, 'imaginaire'):
      protocol.get('coco_stuff', 'pil')

  @parameterized.parameters(
      ((256, 256), [(320, 320), (384, 384), (480, 480), (544, 544),
                    (608, 608)]),
      # Portrait 1000x500: the 1000 cap binds from short side 500 on.
      ((1000, 500), [(608, 320), (768, 384), (928, 480), (1024, 512),
                     (1024, 512)]))
  def test_csail_multiscale_sizes(self, hw, expected):
    self.assertEqual(protocol.input_sizes(protocol.get('ade20k'), hw),
                     expected)

  def test_imaginaire_resizes_the_longer_side_to_512(self):
    p = protocol.get('coco_stuff', 'imaginaire')
    self.assertEqual(protocol.input_sizes(p, (256, 320)), [(409, 512)])
    self.assertEqual(protocol.input_sizes(p, (256, 256)), [(512, 512)])

  def test_cityscapes_label_ids_to_train_ids(self):
    p = protocol.get('cityscapes')
    labels = np.array([[[7, 8, 0, 33, 34, 255, -1, 26]]])
    np.testing.assert_array_equal(
        protocol.map_labels(p, labels),
        [[[0, 1, 255, 18, 255, 255, 255, 13]]])

  def test_ade_and_coco_shift_by_one_and_ignore_zero(self):
    for name, top in (('ade20k', 150), ('coco_stuff', 182)):
      got = protocol.map_labels(protocol.get(name), np.array([[[0, 1, top]]]))
      np.testing.assert_array_equal(got, [[[255, 0, top - 1]]])

  def test_confusion_matches_numpy(self):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, (2, 5, 6))
    labels[0, 0] = 255
    preds = rng.integers(0, 6, (2, 5, 6))
    got = jax.jit(protocol.confusion, static_argnums=2)(labels, preds, 6)
    np.testing.assert_array_equal(got, _np_confusion(labels, preds, 6))

  def test_aligned_resize_matches_the_formula(self):
    x = np.random.default_rng(1).standard_normal((1, 3, 4, 2))
    got = np.asarray(layers.resize_bilinear_aligned(jnp.asarray(x), 5, 7))
    # Row 2 of 5 samples source row 1.0; column 3 of 7 source column 1.5.
    np.testing.assert_allclose(got[0, 2, 3], (x[0, 1, 1] + x[0, 1, 2]) / 2,
                               rtol=1e-6)
    np.testing.assert_allclose(got[0, -1, -1], x[0, -1, -1], rtol=1e-6)

  def test_nearest_resize_is_pytorchs(self):
    ids = np.arange(12).reshape(1, 3, 4)
    np.testing.assert_array_equal(protocol.resize_nearest(ids, 2, 2),
                                  [[[0, 2], [4, 6]]])


class ScalesTest(absltest.TestCase):
  """The glue of `predict` around the network (its scores faked)."""

  def _segment(self, p, images, labels):
    seen = []

    def fake_scores(model, variables, x, size, *, align_corners=False):
      del model, variables
      seen.append((x.shape[1:3], tuple(size), align_corners,
                   np.asarray(x[0, 0, 0])))
      # Class 1 where the first channel is above its mean, else class 0.
      c0 = x[..., :1] - x[..., :1].mean()
      scores = jnp.concatenate([-c0, c0], -1)
      return jax.image.resize(scores, (x.shape[0], *size, 2), 'nearest')

    with mock.patch.object(networks, 'scores', fake_scores):
      conf = protocol.segment(p, {}, jnp.asarray(images), labels)
    return seen, np.asarray(conf)

  def test_csail_multiscale_runs_every_scale_at_the_label_size(self):
    p = protocol.get('ade20k')
    images = np.zeros((1, 64, 48, 3), np.float32)
    labels = np.ones((1, 64, 48), np.int32)  # ADE id 1: class 0.
    seen, conf = self._segment(p, images, labels)
    self.assertEqual([s[0] for s in seen],
                     protocol.input_sizes(p, (64, 48)))
    self.assertEqual({s[1] for s in seen}, {(64, 48)})
    self.assertFalse(any(s[2] for s in seen))
    self.assertEqual(conf.sum(), 64 * 48)
    # Mid-grey through the ImageNet normalisation, R first.
    np.testing.assert_allclose(
        seen[0][3], (128 / 255 - np.array(protocol.IMAGENET_MEAN))
        / np.array(protocol.IMAGENET_STD), rtol=1e-6)

  def test_imaginaire_scores_on_the_512_grid_with_aligned_corners(self):
    p = protocol.get('coco_stuff', 'imaginaire')
    images = np.zeros((1, 128, 256, 3), np.float32)
    images[..., 0] = 1.0  # Red 255, green and blue 127.5; BGR: red last.
    labels = np.full((1, 128, 256), 5, np.int32)
    seen, conf = self._segment(p, images, labels)
    self.assertEqual(seen[0][:3], ((256, 512), (256, 512), True))
    np.testing.assert_allclose(
        seen[0][3], [127.5 - 104.008, 127.5 - 116.669, 255 - 122.675],
        rtol=1e-6)
    self.assertEqual(conf.sum(), 256 * 512)  # Labels resized to the grid.
    self.assertEqual(conf[4].sum(), 256 * 512)  # COCO id 5: class 4.

  def test_deeplab_msc_default_feeds_the_image_as_it_is(self):
    p = protocol.get('coco_stuff')
    images = np.zeros((2, 40, 24, 3), np.float32)
    seen, conf = self._segment(p, images, np.zeros((2, 20, 12), np.int32))
    self.assertEqual(seen[0][:3], ((40, 24), (20, 12), False))
    self.assertEqual(conf.sum(), 0)  # COCO id 0 (unlabeled) is ignored.


class SegmentTest(absltest.TestCase):

  def test_drn_confusion_under_jit_equals_numpy(self):
    p = protocol.get('cityscapes')
    variables = _drn_variables()
    rng = np.random.default_rng(2)
    images = rng.uniform(-1, 1, (2, 16, 24, 3)).astype(np.float32)
    labels = rng.integers(0, 35, (2, 16, 24))
    got = jax.jit(functools.partial(protocol.segment, p))(
        variables, images, labels)
    # Independently: 8-bit pixels, (x / 255 - mean) / std, DRN scores.
    pixels = np.clip(np.round((images + 1) * 127.5), 0, 255)
    x = (pixels / 255 - np.array(p.mean)) / np.array(p.std)
    model = drn.DRNSeg(19)
    scores = networks.scores(model, variables, jnp.asarray(x, jnp.float32),
                             (16, 24))
    preds = np.asarray(scores).argmax(-1)
    table = np.full(35, 255)
    for k, v in protocol.CITYSCAPES_TRAIN_IDS.items():
      table[k] = v
    expected = _np_confusion(table[labels], preds, 19)
    np.testing.assert_array_equal(got, expected)
    self.assertEqual(int(np.asarray(got).sum()),
                     int((table[labels] < 19).sum()))
    self.assertGreater(len(np.unique(preds)), 3)

  def test_bfloat16_runs_and_mostly_agrees(self):
    p = protocol.get('cityscapes')
    variables = _drn_variables()
    images = np.random.default_rng(3).uniform(-1, 1, (1, 16, 16, 3))
    predict = jax.jit(protocol.predict, static_argnums=(0, 3),
                      static_argnames='dtype')
    f32 = predict(p, variables, jnp.asarray(images, jnp.float32))
    bf16 = predict(p, variables, jnp.asarray(images, jnp.float32),
                   dtype=jnp.bfloat16)
    self.assertEqual(bf16.shape, (1, 16, 16))
    self.assertGreater(float((f32 == bf16).mean()), 0.5)


if __name__ == '__main__':
  absltest.main()
