"""The ablation configs (configs/ablations/) train, checkpoint and resume.

Each cell's changes to configs/ade20k.py are applied to configs/tiny.py (with
a narrow SPADE D and a tiny VGG-19 made here, verification off). The cell
with both of the ablation's networks, SPADE D + VGG, trains, checkpoints and
resumes on 4 of the 8 fake CPU devices; the OASIS D + VGG step runs in
bfloat16 with remat; every cell's train state is checked by its shapes.
"""

import os
import subprocess
import sys

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from configs import ade20k
from configs import tiny
from configs.ablations import oasis_vgg
from configs.ablations import spade_d
from configs.ablations import spade_d_vgg
from oasis_jax.evaluation import suite
from oasis_jax import export
from oasis_jax.training import steps
from oasis_jax.training import train
from oasis_jax.training import train_state
from oasis_jax.pretrained import vgg_weights

_CELLS = {'oasis_vgg': oasis_vgg, 'spade_d': spade_d,
          'spade_d_vgg': spade_d_vgg}
_NUM_DEVICES = 4
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _changes(config, base, prefix=''):
  """{dotted key: value} where config differs from base."""
  out = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      out.update(_changes(value, base[key], f'{prefix}{key}.'))
    elif base.get(key) != value:
      out[prefix + key] = value
  return out


def tiny_cell_config(cell: str, vgg_path: str):
  """configs/tiny.py with the cell's changes to configs/ade20k.py."""
  config = tiny.get_config()
  for key, value in _changes(_CELLS[cell].get_config(),
                             ade20k.get_config()).items():
    section, name = key.split('.')
    config[section][name] = value
  config.discriminator.base_channels = 4
  config.discriminator.num_layers = 3
  config.loss.vgg_weights = vgg_path
  config.loss.verify_vgg_weights = False
  return config


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """SPADE D + VGG: 4 steps straight, and 2 steps then 2 more (resumed)."""
  root = tmp_path_factory.mktemp('ablations')
  vgg_path = str(root / 'tiny_vgg.npz')
  np.savez(vgg_path, **vgg_weights.random_state_dict((4, 4, 8, 8, 8)))
  config = tiny_cell_config('spade_d_vgg', vgg_path)
  straight = train.train_and_evaluate(config, root / 'straight',
                                      num_devices=_NUM_DEVICES)
  config.train.num_steps = 2
  first = train.train_and_evaluate(config, root / 'split',
                                   num_devices=_NUM_DEVICES)
  config.train.num_steps = 4
  resumed = train.train_and_evaluate(config, root / 'split',
                                     num_devices=_NUM_DEVICES)
  return dict(config=config, straight=jax.device_get(straight),
              first_step=int(first.step), resumed=jax.device_get(resumed),
              workdir=str(root / 'split'),
              straight_workdir=str(root / 'straight'))


class AblationConfigsTest(parameterized.TestCase):

  def test_cells_change_only_what_the_ablation_needs(self):
    self.assertEqual(_changes(oasis_vgg.get_config(), ade20k.get_config()),
                     {'loss.use_vgg': True})
    self.assertEqual(
        _changes(spade_d.get_config(), ade20k.get_config()),
        {'discriminator.kind': 'spade', 'loss.use_labelmix': False,
         'loss.use_class_balancing': False})

  @parameterized.parameters(*_CELLS)
  def test_state_holds_no_vgg_and_the_chosen_discriminator(self, cell):
    state = train_state.abstract_train_state(
        tiny_cell_config(cell, '/unused/vgg19.npz'))
    names = {jax.tree_util.keystr(p) for p, _ in
             jax.tree_util.tree_leaves_with_path(state)}
    self.assertFalse([n for n in names if 'conv_0_kernel' in n])
    d_params = state.discriminator.params
    if cell.startswith('spade'):
      self.assertEqual(sorted(d_params), ['discriminator_0', 'discriminator_1'])
    else:
      self.assertIn('layer_up_last', d_params)


class AblationTrainingTest(absltest.TestCase):
  """SPADE D + VGG trained, resumed, evaluated and exported."""

  @pytest.fixture(autouse=True)
  def _run(self, run):
    self.run_ = run

  def test_resumed_run_equals_uninterrupted_run(self):
    self.assertEqual(self.run_['first_step'], 2)
    self.assertEqual(int(self.run_['resumed'].step), 4)
    for a, b in zip(jax.tree.leaves(self.run_['straight']),
                    jax.tree.leaves(self.run_['resumed']), strict=True):
      np.testing.assert_array_equal(a, b)

  def test_logged_losses_hold_feature_matching_and_vgg(self):
    events = event_accumulator.EventAccumulator(
        os.path.join(self.run_['straight_workdir'], 'tensorboard'))
    events.Reload()
    logged = {key: [e.value for e in events.Scalars(key)]
              for key in ('g/adv', 'g/feat', 'g/vgg', 'g/total')}
    self.assertLen(logged['g/total'], 2)  # Steps 2 and 4.
    for i in range(2):
      self.assertGreater(logged['g/feat'][i], 0.0)
      self.assertGreater(logged['g/vgg'][i], 0.0)
      self.assertAlmostEqual(
          logged['g/total'][i], logged['g/adv'][i] + logged['g/feat'][i] +
          logged['g/vgg'][i], places=4)

  def test_trained_state_matches_its_shapes(self):
    abstract = train_state.abstract_train_state(self.run_['config'])
    self.assertEqual(
        jax.tree.map(lambda x: (x.shape, x.dtype), abstract),
        jax.tree.map(lambda x: (x.shape, x.dtype), self.run_['resumed']))

  def test_spade_metrics_say_the_discriminator_miou_is_unavailable(self):
    results = suite.evaluate_checkpoint(
        self.run_['workdir'], 'latest', config=self.run_['config'],
        write=False)
    self.assertIsNone(results['miou_discriminator'])
    self.assertIn("kind='spade'", results['miou_discriminator_note'])
    path = export.export(self.run_['workdir'],
                         self.create_tempdir().full_path,
                         with_discriminator=True, config=self.run_['config'])
    self.assertTrue(os.path.isdir(path))


class MainStartUpTest(parameterized.TestCase):
  """`python -m oasis_jax.main` stops at start-up with one FATAL line."""

  def _run_main(self, config_file, *overrides):
    workdir = self.create_tempdir().full_path
    result = subprocess.run(
        [sys.executable, '-m', 'oasis_jax.main',
         f'--config={os.path.join(_REPO, config_file)}',
         f'--workdir={workdir}', *overrides], cwd=_REPO,
        env=dict(os.environ, PYTHONPATH=_REPO,
                 XLA_FLAGS='--xla_force_host_platform_device_count=1'),
        capture_output=True, text=True, check=False, timeout=300)
    self.assertEqual(result.returncode, 1, result.stderr[-3000:])
    self.assertNotIn('Traceback', result.stderr)
    self.assertEmpty(os.listdir(workdir))  # Nothing trained or written.
    return [l for l in result.stderr.splitlines() if l.startswith('FATAL')]

  def test_missing_vgg_weights_name_file_url_and_key(self):
    fatal = self._run_main('configs/ablations/oasis_vgg.py',
                           '--config.eval.fid_every_steps=-1')
    self.assertLen(fatal, 1)
    for part in ('config.loss.vgg_weights is empty', 'vgg19-dcbb9e9d.pth',
                 vgg_weights.WEIGHTS_URL):
      self.assertIn(part, fatal[0])

  def test_labelmix_with_spade_discriminator_is_refused(self):
    fatal = self._run_main('configs/ablations/spade_d.py',
                           '--config.loss.use_labelmix=True')
    self.assertEqual(fatal, [
        "FATAL config.loss.use_labelmix=True needs the OASIS discriminator; "
        "with config.discriminator.kind='spade' (hinge + feature matching) "
        'set config.loss.use_labelmix=False.'])


class AblationStepTest(parameterized.TestCase):

  def test_missing_vgg_weights_stop_before_training(self):
    config = tiny_cell_config('spade_d_vgg', '/nonexistent/vgg19.npz')
    with self.assertRaisesRegex(vgg_weights.MissingVggWeightsError,
                                'vgg19-dcbb9e9d.pth'):
      train.train_and_evaluate(config, self.create_tempdir().full_path,
                               num_devices=1)

  def test_bfloat16_remat_step_logs_every_term(self):
    root = self.create_tempdir().full_path
    vgg_path = os.path.join(root, 'vgg.npz')
    np.savez(vgg_path, **vgg_weights.random_state_dict((4, 4, 8, 8, 8)))
    config = tiny_cell_config('oasis_vgg', vgg_path)
    config.perf.compute_dtype = 'bfloat16'
    config.perf.remat = True
    state = train_state.create_train_state(config, jax.random.PRNGKey(0))
    vgg_params = vgg_weights.load_for_config(config)[0]
    batch = {'image': jnp.zeros((4, 32, 32, 3), jnp.uint8),
             'label': jnp.tile(jnp.arange(4)[:, None, None], (1, 32, 32))}
    step = jax.jit(lambda s, b, r, v: steps.train_step(
        s, b, r, config=config, vgg_params=v))
    new_state, metrics = step(state, batch, jax.random.PRNGKey(1), vgg_params)
    self.assertEqual(sorted(metrics), ['d/fake', 'd/labelmix', 'd/real',
                                       'd/total', 'g/adv', 'g/total', 'g/vgg'])
    for key, value in metrics.items():
      self.assertTrue(np.isfinite(value), key)
    self.assertGreater(float(metrics['g/vgg']), 0.0)
    self.assertAlmostEqual(float(metrics['g/total']),
                           float(metrics['g/adv'] + metrics['g/vgg']),
                           places=4)
    # Both spectral-norm states advanced (G step and D step).
    u_before = state.discriminator.batch_stats['body_down_0']['conv1']['u']
    u_after = new_state.discriminator.batch_stats['body_down_0']['conv1']['u']
    self.assertFalse(np.array_equal(u_before, u_after))


if __name__ == '__main__':
  absltest.main()
