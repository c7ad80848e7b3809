"""The ablation parity fixtures: where they are and how their arrays read.

Every fixture folder under ../shared/parity/ablations/ and those listed in
OASIS_ABLATION_FIXTURES (colon-separated) whose meta.json names its kind.
"""

import json
import os

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), '..', 'shared', 'parity', 'ablations')
ENV_VAR = 'OASIS_ABLATION_FIXTURES'


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


def load(path: str) -> dict[str, np.ndarray]:
  """The arrays of an .npz."""
  with np.load(path) as data:
    return {k: data[k] for k in data.files}


def nhwc(x) -> np.ndarray:
  return np.asarray(x).transpose(0, 2, 3, 1)


def nchw(x) -> np.ndarray:
  return np.asarray(x).transpose(0, 3, 1, 2)
