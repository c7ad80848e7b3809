"""The segmenter parity fixtures: locating, reading and the weight rule.

A fixture folder (../shared/parity/segmenters/<name>/, or any folder listed
in OASIS_SEGMENTER_FIXTURES) holds inputs.npz, outputs.npz and meta.json, as
its README describes; the weights are not stored but regenerated here from
the README's rule `splitmix64-uniform-v1`.
"""

import functools
import hashlib
import json
import os
import pathlib
import tempfile

import numpy as np
import pytest

from oasis_jax.evaluation.segmenters import upernet

_SHARED = pathlib.Path(__file__).resolve().parents[1] / '..' / 'shared'
SHARED_DIR = _SHARED / 'parity' / 'segmenters'
ENV_VAR = 'OASIS_SEGMENTER_FIXTURES'
_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def fixture_dirs() -> list[pathlib.Path]:
  """Every fixture folder: the shared ones, then OASIS_SEGMENTER_FIXTURES."""
  dirs = []
  if SHARED_DIR.is_dir():
    dirs += sorted(p for p in SHARED_DIR.iterdir()
                   if (p / 'meta.json').is_file())
  for entry in os.environ.get(ENV_VAR, '').split(os.pathsep):
    if entry:
      dirs.append(pathlib.Path(entry))
  return dirs


def uniform(seed: int, k: int, n: int) -> np.ndarray:
  """u in [-1, 1) of the rule, for flat indices 0..n-1 of tensor k."""
  with np.errstate(over='ignore'):
    x = (np.arange(n, dtype=np.uint64) + np.uint64(k) * np.uint64(2**40)
         + np.uint64(seed) * np.uint64(2**56))
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
  return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53 * 2 - 1


def tensor(seed: int, entry: dict) -> np.ndarray:
  """One rule-filled tensor of meta.json's `tensors` list."""
  shape = tuple(entry['shape'])
  u = uniform(seed, entry['k'], int(np.prod(shape, dtype=np.int64)))
  return (entry['offset'] + entry['scale'] * u).astype(np.float32).reshape(
      shape)


def skip_without_shared() -> None:
  """Skips the test in a clone without ../shared/ (the fixtures' home); a
  ../shared/ without a fixture the test needs fails it instead."""
  if not _SHARED.is_dir():
    pytest.skip(f'{_SHARED.resolve()} is absent: this test needs its '
                'segmenter fixtures.')


def read_meta(folder) -> dict:
  path = pathlib.Path(folder) / 'meta.json'
  if not path.exists():
    skip_without_shared()
  with open(path) as f:
    return json.load(f)


def state_dicts(meta: dict) -> dict[str, dict[str, np.ndarray]]:
  """file ('model', 'encoder', 'decoder') -> its rule-filled state dict."""
  out = {}
  for entry in meta['tensors']:
    out.setdefault(entry['file'], {})[entry['name']] = tensor(
        meta['seed'], entry)
  return out


def weights_sha256(meta: dict, states: dict) -> str:
  """meta.json's `weights_sha256` recomputed from `states`."""
  digest = hashlib.sha256()
  for entry in meta['tensors']:
    value = states[entry['file']][entry['name']]
    digest.update(np.ascontiguousarray(value, '<f4').tobytes())
  return digest.hexdigest()


def load_arrays(folder) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """(input x NCHW, outputs.npz's arrays)."""
  folder = pathlib.Path(folder)
  with np.load(folder / 'inputs.npz') as f:
    x = f['x']
  with np.load(folder / 'outputs.npz') as f:
    outputs = dict(f)
  return x, outputs


@functools.cache
def weights_npz(name: str) -> str:
  """The rule-filled weights of segmenter `name` (its shared fixture
  folder's) as the .npz a user converts (reference key names)."""
  states = state_dicts(read_meta(SHARED_DIR / name))
  state = (upernet.merge_state_dicts(states['encoder'], states['decoder'])
           if name == upernet.NAME else states['model'])
  path = os.path.join(tempfile.mkdtemp(prefix='segmenter_weights_'),
                      f'{name}.npz')
  np.savez(path, **state)
  return path
