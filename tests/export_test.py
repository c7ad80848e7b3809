"""Tests of `python -m oasis_jax.export` and of loading training workdirs."""

import os
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from configs import tiny64 as tiny64_lib
from oasis_jax.inference import export_format
from oasis_jax.training import checkpointing
from oasis_jax.training import ema_refresh
from oasis_jax import export
from oasis_jax.inference import synthesis
from oasis_jax.training import train_state

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STEP, _BEST_STEP = 4, 2


tiny_config = tiny64_lib.get_config


def _fake_state(config, seed: int):
  """A TrainState of the config's structure, filled without compiling."""
  rng = np.random.default_rng(seed)
  fill = lambda s: (rng.standard_normal(s.shape).astype(s.dtype)
                    if np.issubdtype(s.dtype, np.floating)
                    else np.zeros(s.shape, s.dtype))
  state = jax.tree.map(fill, train_state.abstract_train_state(config))
  return state.replace(ema=synthesis.random_variables(config, seed=seed))


def _dir_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(d, f))
             for d, _, files in os.walk(path) for f in files)


def _leaves_equal(a, b) -> bool:
  return all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))


class ExportTest(parameterized.TestCase):
  """A workdir as `python -m oasis_jax.main` leaves it: config.json, the
  checkpoints of steps 2 and 4, and the best checkpoint (step 2)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp(prefix='export_test_')
    cls.workdir = os.path.join(cls.root, 'run')
    os.makedirs(cls.workdir)
    config = tiny_config()
    with open(os.path.join(cls.workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
    cls.states = {s: _fake_state(config, s) for s in (_BEST_STEP, _STEP)}
    manager = checkpointing.create_manager(cls.workdir)
    for step, state in cls.states.items():
      checkpointing.save(manager, step, state)
    manager.wait_until_finished()
    best = checkpointing.create_best_manager(cls.workdir, metric='fid')
    checkpointing.save_best(best, _BEST_STEP, cls.states[_BEST_STEP],
                            {'fid': 10.0})
    cls.exported = export.export(cls.workdir, os.path.join(cls.root, 'out'))

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def test_export_holds_the_ema_with_refreshed_statistics(self):
    config, variables, manifest = export_format.load_inference(self.exported)
    self.assertEqual(manifest['generator'], 'ema')
    self.assertIn(f'step {_STEP}', manifest['source'])
    self.assertIn('refreshed over 2 batches', manifest['source'])
    self.assertEqual(config.data.num_classes, 6)
    ema = self.states[_STEP].ema
    self.assertTrue(_leaves_equal(variables['generator']['params'],
                                  ema['params']))
    got = variables['generator']['batch_stats']
    # Spectral-norm vectors advance, BN statistics move off (0, 1) ...
    self.assertFalse(_leaves_equal(got, ema['batch_stats']))
    var = got['body_0']['norm_0']['norm']['var']
    self.assertTrue(np.all(var != 1.0))
    # ... exactly as training refreshes them before it samples.
    want = ema_refresh.refresh_statistics(tiny_config(), ema, _STEP)
    self.assertTrue(_leaves_equal(got, want['batch_stats']))
    # The generator alone, not the whole training state.
    state_bytes = _dir_bytes(os.path.join(self.workdir, 'checkpoints',
                                          str(_STEP)))
    self.assertLess(_dir_bytes(self.exported), state_bytes / 3)

  def test_best_and_numbered_steps(self):
    _, best, info = synthesis.load_workdir_generator(
        self.workdir, 'best', refresh_batches=0)
    self.assertEqual(info['step'], _BEST_STEP)
    self.assertTrue(_leaves_equal(best, self.states[_BEST_STEP].ema))
    _, by_step, info = synthesis.load_workdir_generator(
        self.workdir, _BEST_STEP, refresh_batches=0)
    self.assertTrue(_leaves_equal(by_step, best))
    with self.assertRaisesRegex(FileNotFoundError, 'no checkpoint of step 3'):
      synthesis.load_workdir_generator(self.workdir, 3)

  def test_synthesizer_from_workdir_equals_the_export(self):
    label = np.full((2, 64, 64), 3, np.int32)
    label[:, 32:] = 1
    from_workdir = synthesis.Synthesizer.from_workdir(self.workdir)
    exported = synthesis.Synthesizer.from_checkpoint(self.exported)
    np.testing.assert_array_equal(from_workdir.generate(label, seed=1),
                                  exported.generate(label, seed=1))

  def test_command_line_with_discriminator_and_no_refresh(self):
    out = os.path.join(self.create_tempdir().full_path, 'ckpt')
    done = subprocess.run(
        [sys.executable, '-m', 'oasis_jax.export',
         f'--workdir={self.workdir}', f'--out={out}', '--step=best',
         '--refresh_batches=0', '--with_discriminator'],
        env=dict(os.environ, PYTHONPATH=_REPO), cwd=_REPO,
        capture_output=True, text=True, check=False)
    self.assertEqual(done.returncode, 0, done.stderr[-3000:])
    _, variables, manifest = export_format.load_inference(out)
    self.assertTrue(manifest['has_discriminator'])
    state = self.states[_BEST_STEP]
    self.assertTrue(_leaves_equal(variables['generator'], state.ema))
    self.assertTrue(_leaves_equal(
        variables['discriminator'],
        {'params': state.discriminator.params,
         'batch_stats': state.discriminator.batch_stats}))

  def test_missing_workdir_pieces_are_clear_errors(self):
    empty = self.create_tempdir().full_path
    with self.assertRaisesRegex(FileNotFoundError, 'config.json is missing'):
      export.export(empty, os.path.join(empty, 'out'))
    with open(os.path.join(empty, 'config.json'), 'w') as f:
      f.write(tiny_config().to_json_best_effort())
    with self.assertRaisesRegex(FileNotFoundError, 'no checkpoints'):
      export.export(empty, os.path.join(empty, 'out'))
    with self.assertRaisesRegex(FileNotFoundError, 'no best checkpoint'):
      export.export(empty, os.path.join(empty, 'out'), step='best')


if __name__ == '__main__':
  absltest.main()
