"""LPIPS's weight file: its keys, reading and checking it, assembling it.

One flat state dict (`config.eval.lpips_weights`), an `.npz` or a `.pth`
(read with `torch.load(weights_only=True)`):

  features.{0,3,6,8,10}.weight  [O, I, kh, kw]  torchvision AlexNet convs
  features.{0,3,6,8,10}.bias    [O]
  lin{0..4}.model.1.weight      [1, C, 1, 1]    lpips' linear layers

Both sources are public: torchvision's `alexnet-owt-7be5be79.pth` (the
IMAGENET1K_V1 weights of `torchvision.models.alexnet`, keys `features.*` and
`classifier.*`) and lpips' `lpips/weights/v0.1/alex.pth` (keys
`lin{i}.model.1.weight`). Assemble the file once, where torch is installed:

  from oasis_jax.pretrained import lpips_weights
  lpips_weights.merge_weight_files('alexnet-owt-7be5be79.pth', 'alex.pth',
                                   'lpips_alex.npz')
"""

import os
from typing import Any, Mapping

import numpy as np

from oasis_jax.pretrained import weight_files

CONFIG_KEY = 'config.eval.lpips_weights'
# (torchvision `features` index, out channels, kernel, stride, padding).
CONVS = ((0, 64, 11, 4, 2), (3, 192, 5, 1, 2), (6, 384, 3, 1, 1),
         (8, 256, 3, 1, 1), (10, 256, 3, 1, 1))
TRUNK_KEYS = tuple(f'features.{i}.{p}' for i, *_ in CONVS
                   for p in ('weight', 'bias'))
LIN_KEYS = tuple(f'lin{k}.model.1.weight' for k in range(len(CONVS)))
STATE_KEYS = TRUNK_KEYS + LIN_KEYS


class LpipsWeightsError(ValueError):
  """The LPIPS weights file does not hold the expected state dict."""


class MissingLpipsWeightsError(FileNotFoundError):
  """The LPIPS weights file is not set or does not exist."""


def _to_numpy(value) -> np.ndarray:
  if hasattr(value, 'detach'):  # A torch tensor.
    value = value.detach().cpu().numpy()
  return np.asarray(value, np.float32)


def merge_weights(alexnet_state_dict: Mapping[str, Any],
                  lpips_lin_state_dict: Mapping[str, Any]
                  ) -> dict[str, np.ndarray]:
  """The LPIPS state dict from torchvision AlexNet's and lpips' alex.pth.

  Args:
    alexnet_state_dict: torchvision `alexnet` state dict (`features.*`; the
      `classifier.*` entries are dropped).
    lpips_lin_state_dict: lpips' `weights/v0.1/alex.pth` (`lin{i}.model.1.*`).

  Returns:
    {key: float32 array} for every key of STATE_KEYS.
  """
  out = {}
  for keys, src, name in ((TRUNK_KEYS, alexnet_state_dict, 'AlexNet'),
                          (LIN_KEYS, lpips_lin_state_dict, 'lpips')):
    missing = [k for k in keys if k not in src]
    if missing:
      raise LpipsWeightsError(f'The {name} state dict lacks {missing}.')
    out.update({k: _to_numpy(src[k]) for k in keys})
  return out


def _read(path: str) -> dict[str, np.ndarray]:
  return weight_files.read_state_dict(path, what='the LPIPS weights',
                                      error=LpipsWeightsError)


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """The state dict in `path` (.npz or .pth), checked against STATE_KEYS."""
  if not path or not os.path.isfile(path):
    raise MissingLpipsWeightsError(
        f'LPIPS weights file {path!r} not found. Set {CONFIG_KEY} to an .npz '
        'or .pth with the AlexNet and lpips lin weights (see '
        'oasis_jax/pretrained/lpips_weights.py: merge_weight_files).')
  weight_files.file_kind(path, LpipsWeightsError(
      f'{path}: LPIPS weights must be .npz or .pth.'))
  state = {k: np.asarray(v, np.float32) for k, v in _read(path).items()}
  missing = [k for k in STATE_KEYS if k not in state]
  if missing:
    raise LpipsWeightsError(f'{path} lacks the keys {missing}.')
  in_ch = 3
  for k, (idx, ch, ksize, _, _) in enumerate(CONVS):
    expected = {f'features.{idx}.weight': (ch, in_ch, ksize, ksize),
                f'features.{idx}.bias': (ch,),
                LIN_KEYS[k]: (1, ch, 1, 1)}
    for key, shape in expected.items():
      if state[key].shape != shape:
        raise LpipsWeightsError(f'{path}: {key} has shape '
                                f'{state[key].shape}, expected {shape}.')
    in_ch = ch
  return state


def merge_weight_files(alexnet_path: str, lpips_lin_path: str,
                       output_path: str) -> None:
  """Writes the LPIPS .npz from torchvision's and lpips' .pth files."""
  merged = merge_weights(_read(alexnet_path), _read(lpips_lin_path))
  np.savez(output_path, **merged)
