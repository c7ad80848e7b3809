"""Metrics of a saved generator: `evaluate_checkpoint(workdir, checkpoint)`.

The `checkpoint` mode of `python -m oasis_jax.evaluate`: FID
(evaluation/fid.py), mIoU of an ONNX segmenter and the proxy mIoU of the
OASIS discriminator's own segmentation (evaluation/miou.py), all on the same
generated validation images, and diversity (evaluation/diversity.py); writes
`workdir/metrics_<checkpoint>.json`.
"""

import json
import os
from typing import Any, Optional, Union

from absl import logging
import jax
import ml_collections

from oasis_jax.training import checkpointing
from oasis_jax.config import workdir as workdir_config
from oasis_jax.pretrained import inception_weights
from oasis_jax.inference import synthesis
from oasis_jax import models
from oasis_jax.runtime import sharding
from oasis_jax.evaluation import common
from oasis_jax.evaluation import diversity as diversity_lib
from oasis_jax.evaluation import fid as fid_evaluator
from oasis_jax.evaluation import miou as miou_evaluator


def _checkpoint_name(checkpoint: Union[str, int]) -> str:
  if isinstance(checkpoint, str) and checkpoint in ('best', 'latest'):
    return checkpoint
  return str(int(checkpoint))


def evaluate_checkpoint(workdir: str, checkpoint: Union[str, int] = 'best', *,
                        config: Optional[ml_collections.ConfigDict] = None,
                        segmenter: str = '', num_diversity_maps: int = 0,
                        num_diversity_samples: int = 8,
                        mesh: Optional[jax.sharding.Mesh] = None,
                        write: bool = True) -> dict[str, Any]:
  """Metrics of a saved generator; writes workdir/metrics_<checkpoint>.json.

  The EMA generator (BN statistics refreshed for its step, as in training)
  generates the validation split's first config.eval.num_fid_images images
  with the FID noise; on them are computed FID (when
  config.eval.inception_weights is set), mIoU of config.eval.segmenter
  (the paper's segmenters) and of the ONNX `segmenter` (when given) and the
  proxy mIoU of the checkpoint's discriminator
  ('miou_discriminator': argmax over its N real-class logits vs the input
  label, don't care ignored; None with a note for the SPADE D, which does
  not segment). Diversity: `evaluation.diversity`.

  Args:
    workdir: the training run's folder.
    checkpoint: 'best', 'latest' or a step.
    config: the run's config (default: workdir/config.json).
    segmenter: an .onnx segmenter (segmentation.OnnxSegmenter), '' for none.
    num_diversity_maps: label maps of the diversity metric (0: none).
    num_diversity_samples: images per label map for diversity.
    mesh: the device mesh (default: all devices).
    write: write the JSON file (process 0).

  Returns:
    The metrics dict (as written).
  """
  workdir = os.fspath(workdir)
  name = _checkpoint_name(checkpoint)
  if config is None:
    config = workdir_config.read(workdir)
  mesh = sharding.make_mesh() if mesh is None else mesh
  weights = config.eval.inception_weights
  if weights:  # Fail before restoring anything.
    inception_weights.check_inception_weights(
        weights, verify_sha256=config.eval.verify_inception_weights)
  miou_evaluator.check_segmenter_weights(config)
  spec = name if name in ('best', 'latest') else int(name)
  directory, step = checkpointing.find_checkpoint(workdir, spec)
  _, gen_vars, info = synthesis.load_workdir_generator(workdir, spec,
                                                       config=config)
  # The proxy mIoU needs the OASIS D's segmentation; SPADE's D has none.
  disc_vars = (checkpointing.restore_discriminator(directory, step, config)
               if models.discriminator_kind(config) == 'oasis' else None)
  results: dict[str, Any] = {
      'checkpoint': name, 'step': int(info['step']), 'generator':
      info['kind'], 'bn_refresh_batches': int(info['refresh_batches']),
      'num_images': common.num_fid_images(config)}

  miou = miou_evaluator.MiouEvaluator(config, mesh, disc_vars, segmenter)
  if weights:
    evaluator = fid_evaluator.FidEvaluator(config, mesh, workdir)
    results['fid'] = evaluator.fid_of(gen_vars, on_batch=miou.add)
  else:
    logging.warning('config.eval.inception_weights is empty: no FID.')
    results['fid'] = None
    results['fid_note'] = 'config.eval.inception_weights not set'
    generate = common.make_generate_fn(config, mesh)
    placed = jax.device_put(gen_vars, sharding.replicated(mesh))
    for batch in common.eval_batches(
        config, mesh, common.eval_batch_size(config, mesh),
        common.num_fid_images(config)):
      miou.add(batch, generate(placed, batch['label'], batch['index']))
  results.update(miou.results())
  if num_diversity_maps > 0:
    results.update(diversity_lib.diversity(
        config, mesh, gen_vars, num_diversity_maps, num_diversity_samples))
  if write and jax.process_index() == 0:
    path = os.path.join(workdir, f'metrics_{name}.json')
    with open(path, 'w') as f:
      json.dump(results, f, indent=2, sort_keys=True)
    logging.info('Wrote %s', path)
  return results
