"""VGG-19 weights of the perceptual loss: files, checks, conversion, loading.

The VGG loss (config.loss.use_vgg) uses torchvision's ImageNet VGG-19
(`VGG19_Weights.IMAGENET1K_V1`, what `vgg19(pretrained=True)` loads), read
from a file given by path, never downloaded:

* torchvision's `vgg19-dcbb9e9d.pth` (read with torch), or
* an `.npz` of its `features.<index>.weight/bias` keys, written by
  `python -m oasis_jax.pretrained.vgg_weights --input=vgg19-dcbb9e9d.pth
  --output=F.npz`
  (the classifier's 500 MB are left out; the loss never uses them).

The check: torch.hub names a file by the first 8 hex digits of its SHA-256,
so a .pth must hash to `dcbb9e9d...`; an .npz records the SHA-256 of the .pth
it came from and a hash of its arrays. The files are read with the Inception
weights' reader (oasis_jax/weight_files.py); the loaded parameters are frozen:
the train step receives them as an argument and they are never checkpointed.
"""

import os
from typing import Mapping, Optional

from absl import app
from absl import flags
from absl import logging
import numpy as np

from oasis_jax.pretrained import weight_files
from oasis_jax.models import vgg

WEIGHTS_FILENAME = 'vgg19-dcbb9e9d.pth'
WEIGHTS_URL = 'https://download.pytorch.org/models/vgg19-dcbb9e9d.pth'
# The published name carries the first 8 hex digits of the file's SHA-256
# (torch.hub's convention, which torch.hub itself checks); the full digest
# is not published next to the file.
WEIGHTS_SHA256_PREFIX = 'dcbb9e9d'
CONFIG_KEY = 'config.loss.vgg_weights'


class MissingVggWeightsError(FileNotFoundError):
  """The VGG-19 weights file is not configured or does not exist."""


class VggWeightsError(ValueError):
  """The VGG-19 weights file is not the expected one or is malformed."""


def missing_weights_message(path: str = '', setting: str = CONFIG_KEY) -> str:
  """One line: the file the VGG loss needs, where it is published, the key."""
  where = (f'The file {path!r} does not exist. ' if path else
           f'No VGG-19 weights file is configured ({setting} is empty). ')
  return (f'{where}The VGG loss (config.loss.use_vgg) needs torchvision\'s '
          f'ImageNet VGG-19 weights {WEIGHTS_FILENAME}, published at '
          f'{WEIGHTS_URL} . Nothing is downloaded at run time: download it '
          f'once and set {setting} to its path (or to an .npz made with '
          '`python -m oasis_jax.pretrained.vgg_weights --input=FILE.pth '
          '--output=FILE.npz`), or set config.loss.use_vgg=False.')


def _require_file(path: str, setting: str) -> str:
  if not path or not os.path.isfile(path):
    raise MissingVggWeightsError(missing_weights_message(path, setting))
  return weight_files.file_kind(path, VggWeightsError(
      f'{path}: the VGG-19 weights must be a .pth ({WEIGHTS_FILENAME}) or an '
      '.npz of its keys.'))


def _verify(path: str, kind: str, meta: Optional[Mapping[str, str]],
            state: Optional[Mapping[str, np.ndarray]]) -> None:
  """Raises VggWeightsError unless the file is torchvision's VGG-19."""
  hint = ('Other weights (tests): config.loss.verify_vgg_weights=False '
          '(--noverify_sha256 for the converter).')
  weight_files.verify_pinned(
      path, kind, meta, state, sha256=WEIGHTS_SHA256_PREFIX,
      filename=WEIGHTS_FILENAME, url=WEIGHTS_URL,
      converter='oasis_jax.pretrained.vgg_weights', hint=hint,
      error=VggWeightsError)


def read_state_dict(path: str, *, verify_sha256: bool = True,
                    setting: str = CONFIG_KEY) -> dict[str, np.ndarray]:
  """The `features.*` entries of a VGG-19 .pth or .npz (stored dtypes).

  Args:
    path: `vgg19-dcbb9e9d.pth` or an .npz of its features keys.
    verify_sha256: check the file is torchvision's (see the module doc);
      off, any weights with the right keys load (a warning is logged).
    setting: the config key or flag named in the error messages.

  Raises:
    MissingVggWeightsError: no path or no such file (one line: the file,
      where it is published, `setting`).
    VggWeightsError: wrong extension or not the expected weights.
  """
  kind = _require_file(path, setting)
  state = weight_files.read_state_dict(path, what='the VGG-19 weights',
                                       error=VggWeightsError)
  state, meta = (weight_files.split_provenance(state) if kind == 'npz'
                 else (state, None))
  state = {k: v for k, v in state.items() if k.startswith('features.')}
  if verify_sha256:
    _verify(path, kind, meta, state)
  else:
    logging.warning('VGG-19 weights %s are used without verification (not '
                    'necessarily %s).', path, WEIGHTS_FILENAME)
  return state


def check_vgg_weights(path: str, *, verify_sha256: bool = True,
                      setting: str = CONFIG_KEY) -> None:
  """Start-up check when the VGG loss is on: the file exists and is the one.

  Raises:
    MissingVggWeightsError, VggWeightsError: as `read_state_dict`.
  """
  state_dict_to_params(read_state_dict(path, verify_sha256=verify_sha256,
                                       setting=setting), path)


def state_dict_to_params(state: Mapping[str, np.ndarray],
                         path: str = 'the weights'):
  """torchvision `features.<i>.weight/bias` -> (VGG19Features params, widths).

  Args:
    state: OIHW weights and biases of (at least) the 13 convs up to conv5_1;
      any float dtype (upcast exactly to float32).
    path: named in the errors.

  Returns:
    ({'conv_<i>_kernel': [3, 3, in, out] float32, 'conv_<i>_bias': [out]},
     the five block widths).

  Raises:
    VggWeightsError: a key is missing or a shape does not chain.
  """
  params, widths = {}, [None] * 5
  c_in = 3
  for index, block in zip(vgg.CONV_INDICES, vgg.CONV_BLOCKS):
    w_key, b_key = f'features.{index}.weight', f'features.{index}.bias'
    if w_key not in state or b_key not in state:
      raise VggWeightsError(f'{path}: no {w_key} / {b_key}; expected the '
                            'features of torchvision\'s VGG-19.')
    w = np.asarray(state[w_key]).astype(np.float32)
    b = np.asarray(state[b_key]).astype(np.float32)
    if (w.ndim != 4 or w.shape[1:] != (c_in, 3, 3) or b.shape != w.shape[:1]
        or (widths[block] not in (None, w.shape[0]))):
      raise VggWeightsError(f'{path}: {w_key} has shape {w.shape} (bias '
                            f'{b.shape}); expected (out, {c_in}, 3, 3).')
    widths[block] = c_in = w.shape[0]
    params[f'conv_{index}_kernel'] = w.transpose(2, 3, 1, 0)
    params[f'conv_{index}_bias'] = b
  return params, tuple(int(c) for c in widths)


def load_vgg_params(path: str, *, verify_sha256: bool = True,
                    setting: str = CONFIG_KEY):
  """(params, block widths) of VGG19Features from a weights file."""
  return state_dict_to_params(
      read_state_dict(path, verify_sha256=verify_sha256, setting=setting),
      path)


def load_for_config(config):
  """(params, widths) of config.loss.vgg_weights, or None with the loss off.

  Raises:
    MissingVggWeightsError, VggWeightsError: see `read_state_dict`.
  """
  loss = config.loss
  if not loss.use_vgg:
    return None
  return load_vgg_params(loss.vgg_weights,
                         verify_sha256=loss.verify_vgg_weights)


def random_state_dict(channels=vgg.CHANNELS, seed: int = 0,
                      dtype=np.float32) -> dict[str, np.ndarray]:
  """Random VGG-19 `features.*` weights (He fan-in scale), for tests and
  benchmarks: shapes of ImageNet's file with the default widths."""
  rng = np.random.default_rng(seed)
  state, c_in = {}, 3
  for index, block in zip(vgg.CONV_INDICES, vgg.CONV_BLOCKS):
    c_out = channels[block]
    std = np.sqrt(2.0 / (c_in * 9))
    state[f'features.{index}.weight'] = (
        rng.standard_normal((c_out, c_in, 3, 3)) * std).astype(dtype)
    state[f'features.{index}.bias'] = (
        0.05 * rng.standard_normal(c_out)).astype(dtype)
    c_in = c_out
  return state


def check_for_config(config) -> None:
  """Start-up check of config.loss.vgg_weights when the VGG loss is on.

  Raises:
    MissingVggWeightsError, VggWeightsError: see `read_state_dict`.
  """
  if config.loss.use_vgg:
    check_vgg_weights(config.loss.vgg_weights,
                      verify_sha256=config.loss.verify_vgg_weights)


def convert_weights(src: str, dst: str, *, verify_sha256: bool = True) -> None:
  """Writes the `features.*` arrays of a .pth (or .npz) to an .npz.

  The .npz records the source file's SHA-256 and a content hash, by which
  `read_state_dict` verifies it; values and dtypes are kept as stored.
  """
  if os.path.splitext(dst)[1].lower() != '.npz':
    raise VggWeightsError(f'{dst}: the output must be an .npz.')
  state = read_state_dict(src, verify_sha256=verify_sha256, setting='--input')
  state_dict_to_params(state, src)  # Fails on a file of another network.
  meta = weight_files.provenance(src, state)
  os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
  with open(dst, 'wb') as f:
    np.savez(f, **state, **meta)


def main(argv) -> None:
  """`python -m oasis_jax.pretrained.vgg_weights --input=A.pth
  --output=B.npz`."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {list(argv[1:])}.')
  f = flags.FLAGS
  if not f.input or not f.output:
    raise app.UsageError('Give --input (.pth or .npz) and --output (.npz).')
  try:
    convert_weights(f.input, f.output, verify_sha256=f.verify_sha256)
  except (MissingVggWeightsError, VggWeightsError) as e:
    raise SystemExit(f'FATAL {e}') from None
  print(f'Wrote {f.output}')


if __name__ == '__main__':
  flags.DEFINE_string('input', '', f'{WEIGHTS_FILENAME} (or an .npz).')
  flags.DEFINE_string('output', '', 'The .npz to write.')
  flags.DEFINE_bool('verify_sha256', True,
                    f'Refuse an input that is not {WEIGHTS_FILENAME}.')
  app.run(main)
