"""Tests of geometry.py: one rule for the image height and the latent."""

from absl.testing import absltest
from absl.testing import parameterized
import ml_collections

from data_pipelines import geometry


class GeometryTest(parameterized.TestCase):

  @parameterized.parameters((256, 1.0, 256), (512, 2.0, 256),
                            (256, 1.5, 171),  # 170.67: nearest.
                            (100, 8.0, 13),  # 12.5: halves up.
                            (32, 1.0, 32), (3, 4.0, 1))
  def test_image_height_is_the_nearest_integer_halves_up(self, width, aspect,
                                                         height):
    self.assertEqual(geometry.image_height(width, aspect), height)

  def test_image_hw_of_a_data_config(self):
    config = ml_collections.ConfigDict(
        {'data': {'image_size': 256, 'aspect_ratio': 1.5}})
    self.assertEqual(geometry.image_hw(config.data), (171, 256))

  @parameterized.parameters((256, 1.0, 6, (8, 8)), (512, 2.0, 6, (8, 16)),
                            (32, 1.0, 3, (8, 8)), (128, 2.0, 3, (16, 32)))
  def test_latent_is_the_image_over_the_upsampling(self, width, aspect,
                                                   blocks, latent):
    self.assertEqual(geometry.latent_hw(width, aspect, blocks), latent)

  def test_size_the_generator_cannot_produce_is_a_clear_error(self):
    with self.assertRaisesRegex(
        ValueError, r'image_size=256 with aspect_ratio=1.5 gives 171x256 '
        r'.*6 residual blocks.*multiples of 32'):
      geometry.latent_hw(256, 1.5, 6)

  def test_non_positive_aspect_ratio_is_an_error(self):
    with self.assertRaisesRegex(ValueError, 'aspect_ratio=0.0'):
      geometry.image_height(256, 0.0)


if __name__ == '__main__':
  absltest.main()
