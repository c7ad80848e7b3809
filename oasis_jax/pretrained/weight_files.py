"""One reader of PyTorch-style weight files: `.pth` (needs torch) or `.npz`.

Every weight file of the project (official OASIS checkpoints, pytorch-fid's
Inception, LPIPS's AlexNet) is a flat state dict: parameter name -> array.
A `.pth` is read with `torch.load(weights_only=True)` (no pickled code runs);
an `.npz` with `np.load(allow_pickle=False)` and holds the same keys, so
torch is needed only to read a `.pth`.
"""

import hashlib
import os
from typing import Mapping

import numpy as np

EXTENSIONS = ('.pth', '.npz')
# An .npz converted from a published .pth records where it came from, so that
# it can be verified like the original: the SHA-256 of that file, and
# `content_sha256` of the arrays.
NPZ_SOURCE_SHA256 = '__source_sha256__'
NPZ_CONTENT_SHA256 = '__content_sha256__'


def read_state_dict(path: str, *, what: str = 'weights',
                    error: type[Exception] = ValueError
                    ) -> dict[str, np.ndarray]:
  """The state dict of a `.pth` or `.npz` file, as numpy arrays.

  Args:
    path: the file.
    what: what the file is, for messages ('the Inception weights').
    error: the exception type raised for a file of the wrong kind.

  Returns:
    key -> numpy array (an `.npz`'s entries as stored, scalars included).

  Raises:
    FileNotFoundError: no such file.
    ImportError: a `.pth` without torch installed.
    error: another extension, or a `.pth` that holds no state dict.
  """
  if not path or not os.path.isfile(path):
    raise FileNotFoundError(f'{path or "(no path)"}: no such file ({what}).')
  ext = os.path.splitext(path)[1].lower()
  if ext == '.npz':
    with np.load(path, allow_pickle=False) as data:
      return {k: data[k] for k in data.files}
  if ext != '.pth':
    raise error(f'{path}: {what} must be a .pth or an .npz state dict.')
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        f'{path}: reading a .pth file needs PyTorch (pip install torch) for '
        f'{what}; or convert it, where torch is installed, to an .npz with '
        'the same keys.') from e
  state = torch.load(path, map_location='cpu', weights_only=True)
  if not isinstance(state, Mapping):
    raise error(f'{path}: expected a state dict ({what}), got '
                f'{type(state).__name__}.')
  return {k: (v.detach().cpu().numpy() if hasattr(v, 'detach')
              else np.asarray(v)) for k, v in state.items()}


def sha256_file(path: str) -> str:
  """The SHA-256 hex digest of a file's bytes."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def content_sha256(state: Mapping[str, np.ndarray]) -> str:
  """A hash of the arrays (names, dtypes, shapes, values), format-free."""
  digest = hashlib.sha256()
  for key in sorted(state):
    value = np.ascontiguousarray(state[key])
    value = value.astype(value.dtype.newbyteorder('<'), copy=False)
    digest.update(f'{key}|{value.dtype.str}|{value.shape}|'.encode())
    digest.update(value.tobytes())
  return digest.hexdigest()


def split_provenance(state: Mapping[str, np.ndarray]
                     ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """(arrays, provenance entries) of a state dict read from an .npz."""
  arrays, meta = {}, {}
  for key, value in state.items():
    if key in (NPZ_SOURCE_SHA256, NPZ_CONTENT_SHA256):
      meta[key] = str(value)
    else:
      arrays[key] = value
  return arrays, meta


def provenance(source: str, state: Mapping[str, np.ndarray]
               ) -> dict[str, np.ndarray]:
  """The provenance entries for an .npz of `state` converted from `source`
  (an .npz source passes on the original file's SHA-256)."""
  if source.lower().endswith('.npz'):
    _, meta = split_provenance(read_state_dict(source))
    source_sha = meta.get(NPZ_SOURCE_SHA256, '')
  else:
    source_sha = sha256_file(source)
  return {NPZ_SOURCE_SHA256: np.array(source_sha),
          NPZ_CONTENT_SHA256: np.array(content_sha256(state))}
