"""Tests of weight_files.py: the one .pth / .npz state-dict reader."""

import os
import sys
from unittest import mock

from absl.testing import absltest
import numpy as np

from oasis_jax.pretrained import weight_files


class WeightsTest(absltest.TestCase):

  def _npz(self) -> str:
    path = os.path.join(self.create_tempdir().full_path, 'w.npz')
    np.savez(path, **{'a.weight': np.arange(6.0).reshape(2, 3),
                      'b.bias': np.ones(2, np.float32)})
    return path

  def test_npz_keys_and_values(self):
    state = weight_files.read_state_dict(self._npz())
    self.assertEqual(sorted(state), ['a.weight', 'b.bias'])
    np.testing.assert_array_equal(state['a.weight'],
                                  np.arange(6.0).reshape(2, 3))

  def test_pth_gives_the_same_state_dict(self):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError:
      self.skipTest('torch is not installed')
    path = os.path.join(self.create_tempdir().full_path, 'w.pth')
    torch.save({'a.weight': torch.arange(6.0).reshape(2, 3)}, path)
    state = weight_files.read_state_dict(path)
    np.testing.assert_array_equal(state['a.weight'],
                                  np.arange(6.0).reshape(2, 3))
    torch.save([1, 2], path)
    with self.assertRaisesRegex(KeyError, 'expected a state dict'):
      weight_files.read_state_dict(path, error=KeyError)

  def test_pth_without_torch_says_how_to_convert(self):
    path = os.path.join(self.create_tempdir().full_path, 'w.pth')
    with open(path, 'wb') as f:
      f.write(b'x')
    with mock.patch.dict(sys.modules, {'torch': None}):
      with self.assertRaisesRegex(ImportError, r'w\.pth: reading a \.pth '
                                  r'file needs PyTorch.*\.npz'):
        weight_files.read_state_dict(path)

  def test_missing_file_and_other_extensions_are_clear_errors(self):
    with self.assertRaisesRegex(FileNotFoundError, 'nope.npz: no such file'):
      weight_files.read_state_dict('nope.npz')
    path = os.path.join(self.create_tempdir().full_path, 'w.bin')
    with open(path, 'wb') as f:
      f.write(b'x')
    with self.assertRaisesRegex(ValueError, r'w\.bin: the LPIPS weights must '
                                r'be a \.pth or an \.npz'):
      weight_files.read_state_dict(path, what='the LPIPS weights')


if __name__ == '__main__':
  absltest.main()
