"""Tests of weight_files.py: the one reader and the one pinned-file check."""

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

  def _verify(self, path, kind, meta=None, state=None, *, sha256):
    weight_files.verify_pinned(
        path, kind, meta, state, sha256=sha256, filename='w.pth',
        url='https://example.org/w.pth', converter='tool', hint='(hint)',
        error=KeyError)

  def test_pinned_pth_passes_by_digest_or_prefix_and_fails_otherwise(self):
    path = os.path.join(self.create_tempdir().full_path, 'w.pth')
    with open(path, 'wb') as f:
      f.write(b'weights')
    sha = weight_files.sha256_file(path)
    self._verify(path, 'pth', sha256=sha)
    self._verify(path, 'pth', sha256=sha[:8])
    with self.assertRaisesRegex(KeyError, f'has SHA-256 {sha}, not 0+ of '
                                r'w\.pth \(https://example.org/w.pth\)'):
      self._verify(path, 'pth', sha256='0' * 64)
    with self.assertRaisesRegex(KeyError, 'does not start with 0000'):
      self._verify(path, 'pth', sha256='0000')

  def test_pinned_npz_needs_the_recorded_source_and_unchanged_arrays(self):
    state = {'a.weight': np.arange(3.0)}
    meta = {weight_files.NPZ_SOURCE_SHA256: 'ab' * 32,
            weight_files.NPZ_CONTENT_SHA256: weight_files.content_sha256(state)}
    self._verify('w.npz', 'npz', meta, state, sha256='abab')
    with self.assertRaisesRegex(KeyError, 'records no source.*python -m tool'):
      self._verify('w.npz', 'npz', {}, state, sha256='abab')
    with self.assertRaisesRegex(KeyError, 'records the source SHA-256 abab'):
      self._verify('w.npz', 'npz', meta, state, sha256='cd')
    with self.assertRaisesRegex(KeyError, 'do not match the content hash'):
      self._verify('w.npz', 'npz', meta, {'a.weight': np.arange(4.0)},
                   sha256='abab')

  def test_file_kind_by_extension(self):
    self.assertEqual(weight_files.file_kind('a/B.PTH', KeyError()), 'pth')
    self.assertEqual(weight_files.file_kind('b.npz', KeyError()), 'npz')
    with self.assertRaisesRegex(KeyError, 'no weights'):
      weight_files.file_kind('c.bin', KeyError('no weights'))


if __name__ == '__main__':
  absltest.main()
