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
  miou  mIoU of a folder of generated images with their label maps:
        python -m oasis_jax.evaluate miou --config=configs/ade20k.py \
            --images=DIR --labels=DIR --segmenter_network=upernet101 \
            --segmenter_weights=ENCODER,DECODER [--segmenter_protocol=NAME] \
            [--segmenter_dtype=bfloat16] [--batch_size=N] [--out=FILE.json]
        Images and label maps are paired by file stem; the label maps are
        read as the config's data set reads them in training; the paper's
        segmenter under the data set's protocol, as in the checkpoint mode
        (evaluation/miou_folder.py). Prints (and with --out writes) the
        mIoU and the IoU of each class.
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
from oasis_jax.evaluation import miou
from oasis_jax.evaluation import miou_folder
from oasis_jax.runtime import sharding

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
                                   'fid, miou: images per forward pass.')
_VERIFY_WEIGHTS = flags.DEFINE_bool(
    'verify_inception_weights', True,
    'Check the Inception weights\' SHA-256 (off only for other weights, '
    'e.g. tests; their FIDs are not comparable with published ones).')
_CACHE_DIR = flags.DEFINE_string(
    'fid_cache_dir', '', 'fid: cache the real folder\'s statistics here.')

# Folder mode ('miou').
_IMAGES = flags.DEFINE_string(
    'images', '', 'miou: folder of generated images (paired by file stem).')
_LABELS = flags.DEFINE_string(
    'labels', '', 'miou: folder of their label maps (the data set\'s files).')
_OUT = flags.DEFINE_string('out', '', 'miou: also write the results here '
                           '(JSON).')

# Checkpoint mode. (--config and --workdir are defined when run as a program,
# `define_checkpoint_flags`: oasis_jax.main defines flags of the same names.)
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', 'best', 'checkpoint: \'best\', \'latest\' or a step.')
_SEGMENTER = flags.DEFINE_string(
    'segmenter', '', 'checkpoint: an ONNX segmenter for mIoU (NCHW images '
    'normalised with the ImageNet mean/std in, class scores or ids out).')
_SEGMENTER_NETWORK = flags.DEFINE_enum(
    'segmenter_network', None, ['drn_d_105', 'upernet101', 'deeplabv2_msc'],
    'checkpoint, miou: the paper\'s segmenter for mIoU (overrides '
    'config.eval.segmenter); docs/evaluation.md.')
_SEGMENTER_WEIGHTS = flags.DEFINE_string(
    'segmenter_weights', '', 'checkpoint, miou: its weights (overrides '
    'config.eval.segmenter_weights).')
_SEGMENTER_PROTOCOL = flags.DEFINE_string(
    'segmenter_protocol', None, 'checkpoint, miou: the protocol variant '
    '(overrides config.eval.segmenter_protocol; evaluation/segmenters/'
    'protocol.py).')
_SEGMENTER_DTYPE = flags.DEFINE_enum(
    'segmenter_dtype', None, ['float32', 'bfloat16'], 'checkpoint, miou: '
    'the segmenter\'s compute dtype (overrides config.eval.segmenter_dtype).')
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


def _override_segmenter(config) -> None:
  """config.eval's segmenter keys from the --segmenter_* flags given."""
  if _SEGMENTER_NETWORK.value:
    config.eval.segmenter = _SEGMENTER_NETWORK.value
  if _SEGMENTER_WEIGHTS.value:
    config.eval.segmenter_weights = _SEGMENTER_WEIGHTS.value
  if _SEGMENTER_PROTOCOL.value is not None:
    config.eval.segmenter_protocol = _SEGMENTER_PROTOCOL.value
  if _SEGMENTER_DTYPE.value:
    config.eval.segmenter_dtype = _SEGMENTER_DTYPE.value


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
  _override_segmenter(config)
  results = suite.evaluate_checkpoint(
      workdir, _CHECKPOINT.value, config=config, segmenter=_SEGMENTER.value,
      num_diversity_maps=_NUM_DIVERSITY_MAPS.value,
      num_diversity_samples=_NUM_DIVERSITY_SAMPLES.value)
  print(json.dumps(results, indent=2, sort_keys=True))


def _run_fid_folders() -> None:
  frechet.main(_REAL.value, _FAKE.value, _INCEPTION_WEIGHTS.value,
               _BATCH_SIZE.value, verify_sha256=_VERIFY_WEIGHTS.value,
               cache_dir=_CACHE_DIR.value or None)


def _run_miou_folder() -> None:
  config = _flag('config')
  if config is None or not (_IMAGES.value and _LABELS.value):
    raise app.UsageError('The miou mode needs --config=FILE, --images=DIR '
                         'and --labels=DIR.')
  _override_segmenter(config)
  if not config.eval.segmenter:
    raise app.UsageError('The miou mode needs --segmenter_network (or '
                         'config.eval.segmenter).')
  config.eval.segmenter_real_images = False  # The images are all there is.
  miou.check_segmenter_weights(config, setting='--segmenter_weights')
  results = miou_folder.evaluate(config, _IMAGES.value, _LABELS.value,
                                 _BATCH_SIZE.value, sharding.make_mesh())
  text = json.dumps(results, indent=2, sort_keys=True)
  print(text)
  if _OUT.value:
    with open(_OUT.value, 'w') as f:
      f.write(text + '\n')


# Mode name -> function run with the parsed flags.
MODES: dict[str, Callable[[], None]] = {
    'checkpoint': _run_checkpoint,
    'fid': _run_fid_folders,
    'miou': _run_miou_folder,
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
