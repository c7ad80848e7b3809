"""Tests of batching.py: the padded batch runner."""

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from oasis_jax.runtime import batching
from oasis_jax.runtime import sharding


class RunPaddedTest(parameterized.TestCase):

  @parameterized.parameters(1, 4, 5, 8, 9)
  def test_rows_match_the_unbatched_function_and_padding_is_dropped(self, n):
    mesh = sharding.make_mesh(4)
    calls = []

    def fn(x, ids):
      calls.append(ids.shape)
      return x * 2 + ids[:, None]

    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    ids = np.arange(n, dtype=np.int32)
    out = batching.run_padded(jax.jit(fn), [x, ids], 4,
                              sharding.batch_sharding(mesh),
                              pad_values=[0, -1])
    np.testing.assert_array_equal(out, x * 2 + ids[:, None])
    self.assertEqual(calls, [(4,)])  # Traced once: every call is padded.

  def test_padding_uses_the_pad_values(self):
    mesh = sharding.make_mesh(2)
    seen = []

    def fn(ids):
      seen.append(ids)
      return ids

    batching.run_padded(fn, [np.array([5], np.int32)], 2,
                        sharding.batch_sharding(mesh), pad_values=[-1])
    np.testing.assert_array_equal(np.asarray(seen[0]), [5, -1])

  @parameterized.parameters((8, 4, 8), (5, 4, 8), (1, 4, 4), (3, 1, 3))
  def test_rounded_batch_size(self, batch, devices, expected):
    self.assertEqual(batching.rounded_batch_size(batch, devices), expected)


if __name__ == '__main__':
  absltest.main()
