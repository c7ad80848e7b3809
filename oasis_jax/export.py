"""The inference checkpoint of a training run: `python -m oasis_jax.export`.

  python -m oasis_jax.export --workdir=DIR --out=DIR [--step=latest|best|N]
      [--refresh_batches=N] [--data_root=DIR] [--with_discriminator]

Writes the EMA generator of the run (the generator itself when the run had
no EMA) with its BN statistics re-estimated over
config.ema.bn_refresh_batches training batches, as training does before it
samples, and the run's config: the inference checkpoint format of
checkpointing.py, a few hundred MB at official size instead of the
whole training state. `python -m oasis_jax.convert_torch` writes the same
format from official weights. Load it with
`synthesis.Synthesizer.from_checkpoint(DIR)` or `python -m oasis_jax.generate
--checkpoint=DIR`.
"""

from typing import Optional, Sequence, Union

from absl import app
from absl import flags
from absl import logging
import ml_collections

from oasis_jax.inference import export_format
from oasis_jax.training import checkpointing
from oasis_jax.config import workdir as workdir_config
from oasis_jax.runtime import fatal
from oasis_jax.inference import synthesis
from oasis_jax.runtime import logging_utils


def export(workdir: str, out_dir: str, *, step: Union[str, int] = 'latest',
           refresh_batches: Optional[int] = None,
           with_discriminator: bool = False,
           config: Optional[ml_collections.ConfigDict] = None) -> str:
  """Writes the inference checkpoint of a training workdir.

  Args:
    workdir: the run folder (config.json, checkpoints/, checkpoint_best/).
    out_dir: the inference checkpoint folder (replaced if present).
    step: 'latest', 'best' or a step number.
    refresh_batches: BN refresh batches of the EMA generator (default
      config.ema.bn_refresh_batches; 0: keep the checkpoint's statistics).
    with_discriminator: also store the discriminator (for D-based metrics).
    config: the run's config (default: workdir/config.json); e.g. with
      data.root changed to where the training data now is.

  Returns:
    The absolute path of the checkpoint.
  """
  config, variables, info = synthesis.load_workdir_generator(
      workdir, step, config=config, refresh_batches=refresh_batches)
  discriminator = None
  if with_discriminator:
    directory, found = checkpointing.find_checkpoint(workdir, info['step'])
    discriminator = checkpointing.restore_discriminator(directory, found,
                                                        config)
  path = export_format.save_inference(
      out_dir, config, variables, discriminator=discriminator,
      generator_kind=info['kind'], source=info['source'])
  logging.info('Wrote %s: %s.', path, info['source'])
  return path


def define_flags() -> None:
  """The command line flags (defined only when run as a program)."""
  flags.DEFINE_string('workdir', None, 'The training run folder.')
  flags.DEFINE_string('out', None, 'The inference checkpoint folder.')
  flags.DEFINE_string('step', 'latest', "'latest', 'best' or a step number.")
  flags.DEFINE_integer(
      'refresh_batches', -1, 'BN refresh batches of the EMA generator (-1: '
      'config.ema.bn_refresh_batches; 0: none). Needs the training data.')
  flags.DEFINE_string(
      'data_root', '', 'Where the training data is now, if not at the '
      "run's config.data.root (for the BN refresh).")
  flags.DEFINE_bool('with_discriminator', False,
                    'Also store the discriminator.')


def main(argv: Sequence[str]) -> None:
  f = flags.FLAGS
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {list(argv[1:])}.')
  if not f.workdir or not f.out:
    raise app.UsageError('--workdir and --out are required.')
  logging_utils.quiet_library_logs()
  config = workdir_config.read(f.workdir)
  if f.data_root:
    config.data.root = f.data_root
  refresh = f.refresh_batches if f.refresh_batches >= 0 else None
  path = export(f.workdir, f.out, step=f.step, refresh_batches=refresh,
                with_discriminator=f.with_discriminator, config=config)
  print(f'wrote the inference checkpoint {path}')


if __name__ == '__main__':
  define_flags()
  fatal.run_main(main)
