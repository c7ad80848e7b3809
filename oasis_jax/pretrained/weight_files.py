"""One reader and one pinned-file check for every weight file (.pth, .npz).

Every weight file of the project (official OASIS checkpoints, pytorch-fid's
Inception, LPIPS's AlexNet, torchvision's VGG-19) is a flat state dict:
parameter name -> array. A `.pth` is read with
`torch.load(weights_only=True)` (no pickled code runs); an `.npz` with
`np.load(allow_pickle=False)` and holds the same keys, so torch is needed
only to read a `.pth`. A published file is pinned by its SHA-256, an .npz
converted from it by the provenance it records (`verify_pinned`).
"""

import hashlib
import os
from typing import Mapping, Optional

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
  kind = file_kind(
      path, error(f'{path}: {what} must be a .pth or an .npz state dict.'))
  if kind == 'npz':
    with np.load(path, allow_pickle=False) as data:
      return {k: data[k] for k in data.files}
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


def file_kind(path: str, error: Exception) -> str:
  """'pth' or 'npz', by the extension of `path`; raises `error` otherwise."""
  ext = os.path.splitext(path)[1].lower()
  if ext not in EXTENSIONS:
    raise error
  return ext[1:]


def verify_pinned(path: str, kind: str, meta: Optional[Mapping[str, str]],
                  state: Optional[Mapping[str, np.ndarray]], *, sha256: str,
                  filename: str, url: str, converter: str, hint: str,
                  error: type[Exception]) -> None:
  """Raises `error` unless `path` is the published file or an .npz of it.

  The one check of every pinned weight file: a .pth by the SHA-256 of its
  bytes; an .npz by the source SHA-256 that `provenance` recorded and by the
  hash of its arrays (`content_sha256`).

  Args:
    path: the file (for messages; a .pth is hashed).
    kind: 'pth' or 'npz' (`file_kind`).
    meta: an .npz's provenance entries (`split_provenance`).
    state: an .npz's arrays, as they will be used.
    sha256: the published file's SHA-256, or the prefix its name carries
      (torch.hub's convention, where the full digest is not published).
    filename: the published file's name.
    url: where it is published.
    converter: the module that writes the .npz (`python -m converter`).
    hint: how to use other weights (said after a mismatch).
    error: the exception type raised.
  """
  if kind == 'pth':
    sha = sha256_file(path)
    if not sha.startswith(sha256):
      expected = (f'not {sha256} of {filename}' if len(sha) == len(sha256)
                  else f'which does not start with {sha256} as {filename} '
                  'does')
      raise error(f'{path} has SHA-256 {sha}, {expected} ({url}). {hint}')
    return
  source = (meta or {}).get(NPZ_SOURCE_SHA256, '')
  if not source or not source.startswith(sha256):
    recorded = (f'it records the source SHA-256 {source}' if source else
                'it records no source')
    raise error(
        f'{path} was not converted from {filename} (SHA-256 {sha256}): '
        f'{recorded}. Convert the .pth with `python -m {converter} '
        f'--input=FILE.pth --output=FILE.npz`. {hint}')
  if content_sha256(state) != (meta or {}).get(NPZ_CONTENT_SHA256):
    raise error(f'{path}: the arrays do not match the content hash recorded '
                'at conversion (the file was modified or is corrupt).')
