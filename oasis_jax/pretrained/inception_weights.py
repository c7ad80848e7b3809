"""pytorch-fid's Inception-v3 weights: the file, its check, key mapping.

FID's network (evaluation/inception.py) takes its weights from a file given
by path, never downloaded:

* pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (read with torch), or
* an `.npz` holding the same state-dict keys, written by the converter:
  `python -m oasis_jax.pretrained.inception_weights --input=A.pth
  --output=B.npz` (and back).

The .pth is pinned by its SHA-256, an .npz by the provenance the converter
records (weight_files.verify_pinned). `map_state_dict` puts the state dict's
arrays at the places of the network's variables (given as a tree of shapes,
so that this module needs no network).
"""

import os
from typing import Any, Mapping, Optional, Sequence, Tuple

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from oasis_jax.pretrained import weight_files

WEIGHTS_FILENAME = 'pt_inception-2015-12-05-6726825d.pth'
WEIGHTS_URL = ('https://github.com/mseitzer/pytorch-fid/releases/download/'
               'fid_weights/pt_inception-2015-12-05-6726825d.pth')
# SHA-256 of WEIGHTS_FILENAME (95,628,359 bytes). Its first 8 hex digits are
# the file name's suffix (torch.hub's naming convention).
WEIGHTS_SHA256 = (
    '6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2')
CONFIG_KEY = 'config.eval.inception_weights'
CONVERTER = 'oasis_jax.pretrained.inception_weights'

# Entries of an .npz written by `convert_weights`, next to the state dict.
_IGNORED_SUFFIXES = ('.num_batches_tracked',)
_IGNORED_PREFIXES = ('fc.',)  # The 1008-way classifier; FID never uses it.


class MissingInceptionWeightsError(FileNotFoundError):
  """The Inception weights file is not configured or does not exist."""


class InceptionWeightsError(ValueError):
  """The Inception weights file is not the expected one or is malformed."""


def missing_weights_message(path: str = '',
                            setting: str = CONFIG_KEY) -> str:
  """Says which weights file FID needs, where it is published, how to set it.

  Args:
    path: the configured path ('' when none was configured).
    setting: the config key or flag that takes the file's path.

  Returns:
    A message for an error raised at start-up.
  """
  off = ' (config.eval.fid_every_steps = -1)' if setting == CONFIG_KEY else ''
  where = (f'The file {path!r} does not exist. ' if path else
           f'No Inception weights file is configured ({setting} is empty). ')
  return (
      f'{where}FID needs pytorch-fid\'s Inception-v3 weights '
      f'{WEIGHTS_FILENAME} (SHA-256 {WEIGHTS_SHA256}), published at '
      f'{WEIGHTS_URL} . Nothing is downloaded at run time: download the file '
      f'once and set {setting} to its path (an .npz converted from it with '
      f'`python -m {CONVERTER} --input=FILE.pth --output=FILE.npz` '
      f'works too, without torch), or turn FID off{off}.')


def _read_npz(path: str) -> Tuple[dict[str, np.ndarray], dict[str, str]]:
  """Returns (state dict, provenance entries written by `convert_weights`)."""
  return weight_files.split_provenance(_read(path))


def _read(path: str) -> dict[str, np.ndarray]:
  return weight_files.read_state_dict(path, what='the Inception weights',
                                      error=InceptionWeightsError)


def _weights_kind(path: str) -> str:
  return weight_files.file_kind(path, InceptionWeightsError(
      f'{path}: the Inception weights must be a .pth ({WEIGHTS_FILENAME}) '
      'or an .npz of the same state dict.'))


def _require_file(path: str, setting: str) -> None:
  if not path or not os.path.isfile(path):
    raise MissingInceptionWeightsError(missing_weights_message(path, setting))


def _verify(path: str, kind: str, meta: Optional[Mapping[str, str]],
            state: Optional[Mapping[str, np.ndarray]]) -> None:
  """Raises InceptionWeightsError unless the file is pytorch-fid's weights."""
  hint = ('Only pytorch-fid\'s weights give FIDs comparable with published '
          'ones. For other weights (tests), turn verification off '
          '(verify_sha256=False; --noverify_inception_weights in '
          'oasis_jax.evaluate).')
  weight_files.verify_pinned(
      path, kind, meta, state, sha256=WEIGHTS_SHA256,
      filename=WEIGHTS_FILENAME, url=WEIGHTS_URL, converter=CONVERTER,
      hint=hint, error=InceptionWeightsError)


def read_state_dict(path: str, *, verify_sha256: bool = True,
                    setting: str = CONFIG_KEY) -> dict[str, np.ndarray]:
  """Reads the PyTorch state dict from a .pth or .npz weights file.

  Args:
    path: `pt_inception-2015-12-05-6726825d.pth` or an .npz of its keys.
    verify_sha256: check that the file is pytorch-fid's (a .pth by its
      SHA-256; an .npz by the source SHA-256 and content hash the converter
      recorded). Off: any weights with the right keys load (a warning is
      logged).
    setting: the config key or flag named in the missing-file message.

  Returns:
    The state dict as numpy arrays (PyTorch layouts, dtypes as stored).
  """
  _require_file(path, setting)
  kind = _weights_kind(path)
  if kind == 'pth':
    state, meta = _read(path), None
  else:
    state, meta = _read_npz(path)
  if verify_sha256:
    _verify(path, kind, meta, state)
  else:
    logging.warning('Inception weights %s are used without verification; '
                    'FIDs are comparable to published ones only with %s.',
                    path, WEIGHTS_FILENAME)
  return state


def check_inception_weights(path_or_empty: str, *,
                            verify_sha256: bool = True,
                            setting: str = CONFIG_KEY) -> None:
  """Start-up check when FID is on: the weights file exists and is the one.

  Reads and hashes the file but builds no network.

  Args:
    path_or_empty: the configured path (`config.eval.inception_weights`).
    verify_sha256: see `read_state_dict`.
    setting: the config key or flag named in the error messages.

  Raises:
    MissingInceptionWeightsError: no path configured or no such file; the
      message names the file needed, where it is published and `setting`.
    InceptionWeightsError: wrong extension or not the expected weights.
  """
  _require_file(path_or_empty, setting)
  kind = _weights_kind(path_or_empty)
  if not verify_sha256:
    return
  if kind == 'pth':
    _verify(path_or_empty, kind, None, None)
  else:
    state, meta = _read_npz(path_or_empty)
    _verify(path_or_empty, kind, meta, state)


# Flax leaf (collection, name) -> (torch suffix, layout change).
_LEAF_TO_TORCH = {
    ('params', 'kernel'): ('weight', lambda w: w.transpose(2, 3, 1, 0)),
    ('params', 'scale'): ('weight', lambda w: w),
    ('params', 'bias'): ('bias', lambda w: w),
    ('batch_stats', 'mean'): ('running_mean', lambda w: w),
    ('batch_stats', 'var'): ('running_var', lambda w: w),
}


def map_state_dict(state: Mapping[str, np.ndarray], abstract: Any) -> dict:
  """Maps a PyTorch FID-Inception state dict onto the network's variables.

  Args:
    state: key -> array with the .pth's key names and PyTorch layouts.
    abstract: the network's variables as a tree of shapes
      ({'params': ..., 'batch_stats': ...}, from `jax.eval_shape`).

  Returns:
    The tree of `abstract` with float32 numpy leaves.

  Raises:
    InceptionWeightsError: a key is missing, unexpected or has a wrong shape.
  """
  used, problems = set(), []

  def convert(path, leaf):
    names = [k.key for k in path]
    collection, module_path, leaf_name = names[0], names[1:-1], names[-1]
    suffix, to_flax = _LEAF_TO_TORCH[(collection, leaf_name)]
    key = '.'.join(module_path + [suffix])
    used.add(key)
    if key not in state:
      problems.append(f'missing {key}')
      return np.zeros(leaf.shape, np.float32)
    value = to_flax(np.asarray(state[key], np.float32))
    if value.shape != leaf.shape:
      problems.append(f'{key}: shape {np.shape(state[key])} does not fit '
                      f'{leaf.shape} (Flax layout)')
      return np.zeros(leaf.shape, np.float32)
    return np.ascontiguousarray(value)

  variables = jax.tree_util.tree_map_with_path(convert, abstract)
  unexpected = sorted(
      k for k in state if k not in used and not k.endswith(_IGNORED_SUFFIXES)
      and not k.startswith(_IGNORED_PREFIXES))
  problems += [f'unexpected {k}' for k in unexpected]
  if problems:
    shown = '; '.join(problems[:10])
    raise InceptionWeightsError(
        f'Not an FID Inception-v3 state dict ({len(problems)} problems): '
        f'{shown}')
  return variables


def convert_weights(src: str, dst: str, *, verify_sha256: bool = True) -> None:
  """Converts weights between .pth and .npz (by the file extensions).

  .pth -> .npz keeps every key and value as is and records the source's
  SHA-256 and a content hash, by which `read_state_dict` verifies the
  .npz. .npz -> .pth writes the state dict with torch.save (a file whose
  bytes, hence SHA-256, differ from the published one). The keys are
  checked against the network when the file is loaded
  (inception.load_inception_params).

  Args:
    src: the file to read (.pth or .npz).
    dst: the file to write (the other extension).
    verify_sha256: refuse a source that is not pytorch-fid's weights.
  """
  src_kind, dst_kind = _weights_kind(src), _weights_kind(dst)
  if src_kind == dst_kind:
    raise ValueError(f'Nothing to convert: {src} and {dst} are both '
                     f'.{src_kind}.')
  state = read_state_dict(src, verify_sha256=verify_sha256, setting='--input')
  os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
  if dst_kind == 'npz':
    with open(dst, 'wb') as f:
      np.savez(f, **state, **weight_files.provenance(src, state))
  else:
    import torch  # pylint: disable=g-import-not-at-top
    torch.save({k: torch.from_numpy(np.ascontiguousarray(v))
                for k, v in state.items()}, dst)


def main(argv: Sequence[str]) -> None:
  """`python -m oasis_jax.pretrained.inception_weights --input --output`."""
  if len(argv) > 1:
    raise ValueError(f'Unexpected arguments: {argv[1:]}')
  f = flags.FLAGS
  if not f.input or not f.output:
    raise ValueError('Give --input and --output (.pth and .npz, either way).')
  convert_weights(f.input, f.output, verify_sha256=f.verify_sha256)
  print(f'Wrote {f.output}')


if __name__ == '__main__':
  flags.DEFINE_string('input', '', 'Weights to read: .pth or .npz.')
  flags.DEFINE_string('output', '', 'Weights to write: .npz or .pth.')
  flags.DEFINE_bool('verify_sha256', True,
                    f'Refuse an input that is not {WEIGHTS_FILENAME}.')
  app.run(main)
