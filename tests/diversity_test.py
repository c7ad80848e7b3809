"""Tests of evaluation/diversity.py: the MS-SSIM input size."""

from absl.testing import absltest
from absl.testing import parameterized

from oasis_jax.evaluation import diversity


class DiversityTest(parameterized.TestCase):

  @parameterized.parameters(((32, 32), (176, 176)), ((256, 512), (256, 512)),
                            ((128, 256), (176, 352)), ((161, 200), (161, 200)))
  def test_ms_ssim_size_enlarges_short_sides_under_161(self, hw, expected):
    self.assertEqual(diversity.ms_ssim_size(hw), expected)


if __name__ == '__main__':
  absltest.main()
