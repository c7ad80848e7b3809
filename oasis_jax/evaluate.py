"""Evaluation entry point: `python -m oasis_jax.evaluate MODE [--flags]`.

Modes (the first positional argument):
  fid   FID between two image folders:
        python -m oasis_jax.evaluate fid --real=DIR --fake=DIR \
            --inception_weights=pt_inception-2015-12-05-6726825d.pth
"""

from typing import Callable, Sequence

from absl import app
from absl import flags

from oasis_jax import fid

# Folder mode ('fid').
_REAL = flags.DEFINE_string(
    'real', '', 'fid: folder of real images (or an .npz with mu, sigma).')
_FAKE = flags.DEFINE_string(
    'fake', '', 'fid: folder of generated images (or an .npz with mu, sigma).')
_INCEPTION_WEIGHTS = flags.DEFINE_string(
    'inception_weights', '',
    'pytorch-fid\'s pt_inception-2015-12-05-6726825d.pth, or its .npz.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 50,
                                   'fid: images per forward pass.')
_VERIFY_WEIGHTS = flags.DEFINE_bool(
    'verify_inception_weights', True,
    'Check the Inception weights\' SHA-256 (off only for other weights, '
    'e.g. tests; their FIDs are not comparable with published ones).')
_CACHE_DIR = flags.DEFINE_string(
    'fid_cache_dir', '', 'fid: cache the real folder\'s statistics here.')


def _run_fid_folders() -> None:
  fid.main(_REAL.value, _FAKE.value, _INCEPTION_WEIGHTS.value,
           _BATCH_SIZE.value, verify_sha256=_VERIFY_WEIGHTS.value,
           cache_dir=_CACHE_DIR.value or None)


# Mode name -> function run with the parsed flags.
MODES: dict[str, Callable[[], None]] = {
    'fid': _run_fid_folders,
}


def main(argv: Sequence[str]) -> None:
  if len(argv) != 2 or argv[1] not in MODES:
    raise app.UsageError(
        f'Usage: python -m oasis_jax.evaluate MODE [--flags], MODE one of '
        f'{", ".join(sorted(MODES))}; got {list(argv[1:])}.')
  MODES[argv[1]]()


if __name__ == '__main__':
  app.run(main)
