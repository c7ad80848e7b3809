"""`python -m oasis_jax.main` that also records the training examples it fed.

Run by tests/multihost_test.py, one per process, with the flags of
oasis_jax.main and jax.distributed's JAX_COORDINATOR_ADDRESS /
JAX_NUM_PROCESSES / JAX_PROCESS_ID in the environment (main.py initializes
from them). Before handing over to `main.run()`, it wraps
`sharding.global_batch` so that every training batch this process
contributes is appended to `$OASIS_MULTIHOST_RECORD/process_<i>.jsonl`: one
line per step, a fingerprint (SHA-1 of the image and label bytes) per
example of the local batch, in row order. SIGUSR1 prints every thread's
stack (the test sends it to a process that hangs, before killing it).
"""

import faulthandler
import hashlib
import json
import os
import signal
import sys

# Run as a script: the repository (configs/, oasis_jax/) goes on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import numpy as np

from oasis_jax import main
from oasis_jax.runtime import sharding

RECORD_ENV = 'OASIS_MULTIHOST_RECORD'
_TRAIN_KEYS = frozenset({'image', 'label'})  # Sample/refresh batches differ.


def fingerprints(local_batch) -> list[str]:
  """One short SHA-1 per example of {'image': [b, ...], 'label': [b, ...]}."""
  image, label = np.asarray(local_batch['image']), np.asarray(
      local_batch['label'])
  return [hashlib.sha1(image[i].tobytes() + label[i].tobytes()).hexdigest()[:16]
          for i in range(image.shape[0])]


def _recording(global_batch, folder: str):
  """`global_batch` that first appends the training batch's fingerprints."""

  def wrapped(local_batch, mesh):
    if frozenset(local_batch) == _TRAIN_KEYS:
      path = os.path.join(folder, f'process_{jax.process_index()}.jsonl')
      with open(path, 'a') as f:
        f.write(json.dumps(fingerprints(local_batch)) + '\n')
    return global_batch(local_batch, mesh)

  return wrapped


if __name__ == '__main__':
  # The test sends SIGUSR1 to a process that overran its time: every
  # thread's Python stack goes to stderr before it is killed.
  faulthandler.register(signal.SIGUSR1, all_threads=True)
  record = os.environ.get(RECORD_ENV)
  if record:
    os.makedirs(record, exist_ok=True)
    sharding.global_batch = _recording(sharding.global_batch, record)
  main.run()
