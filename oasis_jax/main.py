"""Trains OASIS: `python -m oasis_jax.main --config=configs/X.py --workdir=DIR`.

Override any config value with `--config.section.key=value`; the config is
locked, so a mistyped key is an error that names it. The run resumes from the
newest checkpoint in DIR.

Several processes (hosts): start one per host with the same flags and
JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES=n and JAX_PROCESS_ID=i in
the environment (or run under a cluster manager that jax.distributed detects,
e.g. SLURM, with JAX_COORDINATOR_ADDRESS unset).
"""

import contextlib
import os
import re
import sys
from typing import Sequence

from absl import app
from absl import flags
from absl import logging
from etils import epath
import jax
from ml_collections import config_flags

import data_pipelines
from oasis_jax.runtime import compilation_cache
from oasis_jax.config import compat
from oasis_jax.config import resolution
from oasis_jax.config import validation
from oasis_jax.runtime import fatal
from oasis_jax.runtime import logging_utils
from oasis_jax import models
from oasis_jax.runtime import sharding
from oasis_jax.runtime import workdir_lock
from oasis_jax.training import actions
from oasis_jax.training import train
from oasis_jax.pretrained import inception_weights
from oasis_jax.pretrained import vgg_weights
from oasis_jax.evaluation import fid as fid_evaluator
from oasis_jax.evaluation import miou as miou_evaluator

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Training configuration file (configs/*.py).',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Run folder: checkpoints, samples, TensorBoard events.')


def initialize_distributed() -> None:
  """jax.distributed.initialize from the environment, when it asks for it."""
  env = os.environ
  if 'JAX_COORDINATOR_ADDRESS' in env or 'JAX_NUM_PROCESSES' in env:
    num = env.get('JAX_NUM_PROCESSES')
    pid = env.get('JAX_PROCESS_ID')
    jax.distributed.initialize(
        coordinator_address=env.get('JAX_COORDINATOR_ADDRESS'),
        num_processes=int(num) if num else None,
        process_id=int(pid) if pid else None)
  elif 'SLURM_JOB_ID' in env and int(env.get('SLURM_NTASKS', '1')) > 1:
    jax.distributed.initialize()


def describe_devices() -> str:
  """The process and device layout, one line."""
  local = jax.local_devices()
  return (f'process {jax.process_index()} of {jax.process_count()}; '
          f'{len(local)} local / {jax.device_count()} global devices '
          f'({local[0].platform}: {local[0].device_kind}).')


def create_evaluate_fn(config, workdir, mesh=None):
  """The run's FID evaluate_fn, or None when config.eval.fid_every_steps <= 0.

  With config.eval.segmenter set, it also returns that segmenter's mIoU of
  the same images ('miou', usable as config.eval.best_metric).

  Checks the Inception weights file first, so that a missing or wrong file
  stops the run at start-up, before any training.

  Args:
    config: the run configuration.
    workdir: the run's folder (FID statistics cache: workdir/fid_stats).
    mesh: the training mesh (default: all devices, as train_and_evaluate).

  Raises:
    inception_weights.MissingInceptionWeightsError: no such file (the
      message names the file, where it is published and
      config.eval.inception_weights).
    inception_weights.InceptionWeightsError: not pytorch-fid's weights.
  """
  if int(config.eval.fid_every_steps) <= 0:
    return None
  inception_weights.check_inception_weights(
      config.eval.inception_weights,
      verify_sha256=config.eval.verify_inception_weights)
  miou_evaluator.check_segmenter_weights(config)
  mesh = sharding.make_mesh() if mesh is None else mesh
  fid = fid_evaluator.make_fid_evaluator(config, mesh, workdir)
  if not config.eval.segmenter:
    return fid
  return miou_evaluator.FidAndMiou(fid,
                                   miou_evaluator.SegmenterMiou(config, mesh))


def main(argv: Sequence[str]) -> None:
  """Checks the config against the workdir's, trains, writes config.json.

  SIGTERM / SIGINT are caught from here on: the run stops after the step in
  flight (or before its first step), its checkpoint written, exit status 0.
  The workdir is locked (process 0) from before anything is written into it
  until the end: a second run on it stops naming this one.
  Expected failures end in one `FATAL ...` line and exit status 1 (see
  fatal.py; --verbose adds the traceback).
  """
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {list(argv[1:])}.')
  logging_utils.quiet_library_logs()
  with actions.StopRequest() as stop, contextlib.ExitStack() as stack:
    initialize_distributed()
    validation.validate(_CONFIG.value)
    # 'auto' choices made concrete for this platform: what is printed and
    # saved in config.json.
    config = resolution.resolve(_CONFIG.value)
    workdir = epath.Path(_WORKDIR.value)
    models.discriminator_kind(config)  # Refuses what it cannot combine.
    if workdir.exists() and not workdir.is_dir():
      raise NotADirectoryError(f'--workdir={workdir} is a file; a folder '
                               'is expected.')
    if jax.process_index() == 0:  # One run per workdir (workdir_lock.py).
      stack.enter_context(workdir_lock.WorkdirLock(workdir))
    # Before anything is written into the workdir.
    compat.check_workdir(config, workdir)
    compilation_cache.enable(config.train.compilation_cache_dir)
    logging.info('Configuration:\n%s', config)
    logging.info('Devices: %s', describe_devices())
    vgg_weights.check_for_config(config)  # Before any training.
    evaluate_fn = create_evaluate_fn(config, workdir)

    def write_config():
      if jax.process_index() == 0:
        compat.write_workdir_config(config, workdir)

    try:
      train.train_and_evaluate(config, workdir, evaluate_fn=evaluate_fn,
                               stop_request=stop, on_started=write_config)
    except data_pipelines.DataError as e:  # Names the file and the problem.
      fatal.report(e, prefix='bad data: ')
      sys.exit(fatal.EXIT_FAILURE)


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing; a mistyped config override exits naming the key.

  ml_collections raises AttributeError / KeyError (with a "did you mean")
  for an override of a key that the locked config does not have.
  """
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as e:
    message = _unknown_key_message(e, argv)
    sys.stderr.write(f'FATAL Flags parsing error: {message}\n')
    sys.exit(1)


def _unknown_key_message(error: Exception, argv: Sequence[str]) -> str:
  """'--config.a.b=1: the config has no key 'b'. Did you mean "c" ...?'."""
  detail = str(error.args[0]) if error.args else str(error)
  match = re.search(r"([A-Za-z0-9_]+)", detail)
  key = match.group(1) if match else ''
  hint = re.search(r'Did you mean[^?]*\?', detail)
  overrides = [a for a in argv[1:] if a.startswith('--config.')]
  named = [a for a in overrides if key in a.split('=')[0].split('.')]
  where = ', '.join(named or overrides) or 'a --config override'
  return (f'{where}: the config has no key {key!r}.'
          + (f' {hint.group(0)}' if hint else ''))


def run() -> None:
  """The command line entry point (flags parsed by absl)."""
  flags.mark_flags_as_required(['config', 'workdir'])
  fatal.run_main(main, flags_parser=parse_flags)


if __name__ == '__main__':
  run()
