"""Evaluation entry point: `python -m oasis_jax.evaluate [MODE] [--flags]`.

Modes (the first positional argument):
  checkpoint  (the default) metrics of a training run's saved generator:
        python -m oasis_jax.evaluate --workdir=DIR [--config=configs/X.py] \
            [--checkpoint=best|latest|STEP] [--segmenter=model.onnx] \
            [--segmenter_network=NAME --segmenter_weights=FILE] \
            [--num_diversity_maps=K]
        FID (when config.eval.inception_weights or --inception_weights is
        set), mIoU of the ONNX segmenter, the discriminator's proxy mIoU and
        diversity (MS-SSIM); writes DIR/metrics_<checkpoint>.json and prints
        it. Without --config, the run's DIR/config.json is used; override
        values with --config.section.key=value.
  fid   FID between two image folders:
        python -m oasis_jax.evaluate fid --real=DIR --fake=DIR \
            --inception_weights=pt_inception-2015-12-05-6726825d.pth
"""

import json
from typing import Callable, Sequence

from absl import app
from absl import flags
from ml_collections import config_flags

from oasis_jax.config import workdir as workdir_config
from oasis_jax.runtime import compilation_cache
from oasis_jax.evaluation import suite
from oasis_jax.runtime import fatal
from oasis_jax.evaluation import frechet

# Folder mode ('fid').
_REAL = flags.DEFINE_string(
    'real', '', 'fid: folder of real images (or an .npz with mu, sigma).')
_FAKE = flags.DEFINE_string(
    'fake', '', 'fid: folder of generated images (or an .npz with mu, sigma).')
_INCEPTION_WEIGHTS = flags.DEFINE_string(
    'inception_weights', '',
    'pytorch-fid\'s pt_inception-2015-12-05-6726825d.pth, or its .npz '
    '(checkpoint: overrides config.eval.inception_weights).')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 50,
                                   'fid: images per forward pass.')
_VERIFY_WEIGHTS = flags.DEFINE_bool(
    'verify_inception_weights', True,
    'Check the Inception weights\' SHA-256 (off only for other weights, '
    'e.g. tests; their FIDs are not comparable with published ones).')
_CACHE_DIR = flags.DEFINE_string(
    'fid_cache_dir', '', 'fid: cache the real folder\'s statistics here.')

# Checkpoint mode. (--config and --workdir are defined when run as a program,
# `define_checkpoint_flags`: oasis_jax.main defines flags of the same names.)
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', 'best', 'checkpoint: \'best\', \'latest\' or a step.')
_SEGMENTER = flags.DEFINE_string(
    'segmenter', '', 'checkpoint: an ONNX segmenter for mIoU (NCHW images '
    'normalised with the ImageNet mean/std in, class scores or ids out).')
_SEGMENTER_NETWORK = flags.DEFINE_enum(
    'segmenter_network', None, ['drn_d_105', 'upernet101', 'deeplabv2_msc'],
    'checkpoint: the paper\'s segmenter for mIoU (overrides '
    'config.eval.segmenter); docs/evaluation.md.')
_SEGMENTER_WEIGHTS = flags.DEFINE_string(
    'segmenter_weights', '', 'checkpoint: its weights (overrides '
    'config.eval.segmenter_weights).')
_NUM_DIVERSITY_MAPS = flags.DEFINE_integer(
    'num_diversity_maps', 0,
    'checkpoint: label maps of the diversity (MS-SSIM) metric; 0: none.')
_NUM_DIVERSITY_SAMPLES = flags.DEFINE_integer(
    'num_diversity_samples', 8,
    'checkpoint: images (noises) per label map for diversity.')


def define_checkpoint_flags() -> None:
  """Defines --config and --workdir (the program's own flags)."""
  config_flags.DEFINE_config_file(
      'config', None, 'checkpoint: the run\'s config file (default: '
      'WORKDIR/config.json).', lock_config=True)
  flags.DEFINE_string('workdir', None, 'checkpoint: the training run folder.')


def _flag(name: str):
  return flags.FLAGS[name].value if name in flags.FLAGS else None


def _run_checkpoint() -> None:
  workdir = _flag('workdir')
  if not workdir:
    raise app.UsageError('The checkpoint mode needs --workdir=DIR (run '
                         '`python -m oasis_jax.evaluate --workdir=DIR`).')
  config = _flag('config')
  if config is None:
    config = workdir_config.read(workdir)
  # A read config.json is merged onto the defaults: it has every key.
  if _INCEPTION_WEIGHTS.value:
    config.eval.inception_weights = _INCEPTION_WEIGHTS.value
  if flags.FLAGS['verify_inception_weights'].present:
    config.eval.verify_inception_weights = _VERIFY_WEIGHTS.value
  if _SEGMENTER_NETWORK.value:
    config.eval.segmenter = _SEGMENTER_NETWORK.value
  if _SEGMENTER_WEIGHTS.value:
    config.eval.segmenter_weights = _SEGMENTER_WEIGHTS.value
  results = suite.evaluate_checkpoint(
      workdir, _CHECKPOINT.value, config=config, segmenter=_SEGMENTER.value,
      num_diversity_maps=_NUM_DIVERSITY_MAPS.value,
      num_diversity_samples=_NUM_DIVERSITY_SAMPLES.value)
  print(json.dumps(results, indent=2, sort_keys=True))


def _run_fid_folders() -> None:
  frechet.main(_REAL.value, _FAKE.value, _INCEPTION_WEIGHTS.value,
           _BATCH_SIZE.value, verify_sha256=_VERIFY_WEIGHTS.value,
           cache_dir=_CACHE_DIR.value or None)


# Mode name -> function run with the parsed flags.
MODES: dict[str, Callable[[], None]] = {
    'checkpoint': _run_checkpoint,
    'fid': _run_fid_folders,
}
DEFAULT_MODE = 'checkpoint'  # When no mode is given.


def main(argv: Sequence[str]) -> None:
  if len(argv) == 1:
    argv = [argv[0], DEFAULT_MODE]
  if len(argv) != 2 or argv[1] not in MODES:
    raise app.UsageError(
        f'Usage: python -m oasis_jax.evaluate MODE [--flags], MODE one of '
        f'{", ".join(sorted(MODES))}; got {list(argv[1:])}.')
  compilation_cache.enable()
  MODES[argv[1]]()


if __name__ == '__main__':
  define_checkpoint_flags()
  fatal.run_main(main)
