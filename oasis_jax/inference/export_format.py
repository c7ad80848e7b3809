"""The inference checkpoint: a generator's variables and its config.

  DIR/oasis_inference.json  {"format": "oasis_jax.inference.synthesis",
                             "version": 1, "generator": "ema" | "generator",
                             "source": ..., "has_discriminator": ...}
  DIR/config.json           the full ml_collections config of the model
  DIR/variables/            Orbax PyTree checkpoint:
                              {'generator': {'params', 'batch_stats'},
                               'discriminator': {...}  (optional)}

Written by ``python -m oasis_jax.export`` (from a training workdir) and
``python -m oasis_jax.convert_torch`` (from official OASIS weights), read by
`synthesis.Synthesizer.from_checkpoint`. The format string names the module
that first read it; it is stored in every file, so it stays.
"""

import json
import os
import shutil
from typing import Any, Optional

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from oasis_jax.config import workdir as workdir_config

INFERENCE_FORMAT = 'oasis_jax.inference.synthesis'
INFERENCE_VERSION = 1
INFERENCE_MANIFEST = 'oasis_inference.json'


def save_inference(out_dir: str, config: ml_collections.ConfigDict,
                   generator: Any, *, discriminator: Optional[Any] = None,
                   generator_kind: str = 'ema', source: str = '') -> str:
  """Writes an inference checkpoint; an existing one at out_dir is replaced
  only once the new one is complete.

  Args:
    out_dir: the checkpoint directory.
    config: the run configuration the variables belong to.
    generator: {'params': ..., 'batch_stats': ...} of the generator.
    discriminator: optional discriminator variables (for the D-based mIoU).
    generator_kind: 'ema' or 'generator'.
    source: free text recorded in the manifest (where the weights came from).

  Returns:
    The absolute path of the checkpoint.
  """
  out_dir = os.path.abspath(out_dir)
  tmp = out_dir.rstrip('/') + '.tmp'
  if os.path.exists(tmp):
    shutil.rmtree(tmp)
  os.makedirs(tmp)
  to_numpy = lambda t: jax.tree.map(lambda x: np.asarray(jax.device_get(x)),
                                    t)
  tree = {'generator': to_numpy(generator)}
  if discriminator is not None:
    tree['discriminator'] = to_numpy(discriminator)
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(os.path.join(tmp, 'variables'), tree)
  ckptr.wait_until_finished()
  with open(os.path.join(tmp, workdir_config.CONFIG_FILE), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  with open(os.path.join(tmp, INFERENCE_MANIFEST), 'w') as f:
    json.dump({'format': INFERENCE_FORMAT, 'version': INFERENCE_VERSION,
               'generator': generator_kind, 'source': source,
               'has_discriminator': discriminator is not None}, f, indent=2)
  if os.path.exists(out_dir):
    shutil.rmtree(out_dir)
  os.replace(tmp, out_dir)
  return out_dir


def is_inference_checkpoint(path: str) -> bool:
  return os.path.isfile(os.path.join(path, INFERENCE_MANIFEST))


def load_inference(path: str) -> tuple[ml_collections.ConfigDict,
                                       dict[str, Any], dict[str, Any]]:
  """Reads an inference checkpoint.

  Returns:
    (config, variables, manifest): variables = {'generator': ...,
    ['discriminator': ...]} as numpy arrays.
  """
  path = os.path.abspath(path)
  manifest_path = os.path.join(path, INFERENCE_MANIFEST)
  if not os.path.isfile(manifest_path):
    raise FileNotFoundError(
        f'{path} is not an oasis-jax inference checkpoint (no '
        f'{INFERENCE_MANIFEST}); write one with `python -m oasis_jax.export` '
        'or `python -m oasis_jax.convert_torch`.')
  with open(manifest_path) as f:
    manifest = json.load(f)
  if (manifest.get('format') != INFERENCE_FORMAT or
      manifest.get('version') != INFERENCE_VERSION):
    raise ValueError(f'{manifest_path}: unsupported format {manifest}; '
                     f'expected {INFERENCE_FORMAT} version '
                     f'{INFERENCE_VERSION}.')
  config = workdir_config.read(path)  # Merged onto the defaults.
  variables = ocp.StandardCheckpointer().restore(
      os.path.join(path, 'variables'))
  variables = jax.tree.map(np.asarray, variables)
  return config, variables, manifest
