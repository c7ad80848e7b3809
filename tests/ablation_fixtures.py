"""The ablation parity fixtures: where they are and how their arrays read.

Every fixture folder under ../shared/parity/ablations/ and those listed in
OASIS_ABLATION_FIXTURES (colon-separated) whose meta.json names its kind.
"""

import json
import os

import numpy as np
import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), '..', 'shared', 'parity', 'ablations')
ENV_VAR = 'OASIS_ABLATION_FIXTURES'
_SHARED = os.path.dirname(os.path.dirname(ROOT))


def parameters(dirs: list[str]) -> list[tuple[str, str]]:
  """(name, folder) test cases of dirs; without any, in a clone without
  ../shared/, one case whose test skips (require_dirs)."""
  if not dirs and not os.path.isdir(_SHARED):
    return [('no_shared', '')]
  return [(f'{i}_{os.path.basename(d)}', d) for i, d in enumerate(dirs)]


def require_dirs(dirs: list[str], kind: str) -> None:
  """Skips the test in a clone without ../shared/ (the fixtures' home);
  fails it when ../shared/ is there but holds no `kind` fixture."""
  if not dirs and not os.path.isdir(_SHARED):
    pytest.skip(f'{os.path.abspath(_SHARED)} is absent: this test needs its '
                f'{kind} fixtures.')
  assert dirs, f'no {kind} fixture under {ROOT} or ${ENV_VAR}'


def fixture_dirs(kind: str) -> list[str]:
  """Fixture folders of `kind` ('spade_d', 'vgg_loss') in ROOT and $ENV_VAR."""
  dirs = []
  if os.path.isdir(ROOT):
    dirs += [os.path.join(ROOT, d) for d in sorted(os.listdir(ROOT))]
  dirs += [d for d in os.environ.get(ENV_VAR, '').split(':') if d]
  found = []
  for d in dirs:
    meta = os.path.join(d, 'meta.json')
    if os.path.isfile(meta):
      with open(meta) as f:
        if json.load(f).get('kind') == kind:
          found.append(os.path.abspath(d))
  return found


def tolerances(directory: str) -> dict[str, float]:
  """meta.json's tolerance table: array name -> bound."""
  with open(os.path.join(directory, 'meta.json')) as f:
    return json.load(f)['tolerances']


def failures(tols: dict[str, float], refs: dict[str, np.ndarray],
             port: dict[str, np.ndarray], scale=None) -> dict[str, str]:
  """Arrays beyond tolerance: name -> reason; err = max|port - ref| / scale.

  scale(name, ref) -> the array's scale, or None for the default max|ref|.
  Every array the tolerance table names must be computed.
  """
  out = {}
  for name, tol in tols.items():
    if name not in port:
      out[name] = 'not computed'
      continue
    ref = np.asarray(refs[name], np.float64)
    got = np.asarray(port[name], np.float64)
    if got.shape != ref.shape:
      out[name] = f'shape {got.shape} != {ref.shape}'
      continue
    s = scale(name, ref) if scale else None
    if s is None:
      s = float(np.max(np.abs(ref)))
    err = float(np.max(np.abs(got - ref))) / max(s, 1e-30)
    if not err <= tol:
      out[name] = f'{err:.3g} > {tol:.3g}'
  return out


def load(path: str) -> dict[str, np.ndarray]:
  """The arrays of an .npz."""
  with np.load(path) as data:
    return {k: data[k] for k in data.files}


def nhwc(x) -> np.ndarray:
  return np.asarray(x).transpose(0, 2, 3, 1)


def nchw(x) -> np.ndarray:
  return np.asarray(x).transpose(0, 3, 1, 2)
