"""One reader of PyTorch-style weight files: `.pth` (needs torch) or `.npz`.

Every weight file of the project (official OASIS checkpoints, pytorch-fid's
Inception, LPIPS's AlexNet) is a flat state dict: parameter name -> array.
A `.pth` is read with `torch.load(weights_only=True)` (no pickled code runs);
an `.npz` with `np.load(allow_pickle=False)` and holds the same keys, so
torch is needed only to read a `.pth`.
"""

import os
from typing import Mapping

import numpy as np

EXTENSIONS = ('.pth', '.npz')


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
