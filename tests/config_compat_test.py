"""Tests of the workdir config check: model keys fixed, safe keys free."""

import json
import os

from absl.testing import absltest
from absl.testing import parameterized

from configs import tiny
from oasis_jax.config import compat
from oasis_jax.config import workdir as workdir_config


def _workdir_with_config(test, config):
  workdir = test.create_tempdir().full_path
  with open(os.path.join(workdir, workdir_config.CONFIG_FILE), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  return workdir


class KindTest(parameterized.TestCase):

  @parameterized.parameters(
      ('generator.channels', compat.MODEL),
      ('discriminator.kind', compat.MODEL),  # A future key: its section.
      ('data.num_classes', compat.MODEL),
      ('train.batch_size', compat.MODEL),
      ('ema.use_ema', compat.MODEL),
      ('loss.use_vgg', compat.SAFE),  # VGG-19 is not in the state.
      ('loss.brand_new_term', compat.MODEL),  # Unknown: conservative.
      ('data.lvis_min_area', compat.MODEL),  # Unknown: conservative.
      ('brand_new_section.key', compat.MODEL),
      ('train.num_steps', compat.SAFE),
      ('train.checkpoint_every_steps', compat.SAFE),
      ('optim.lr_g', compat.SAFE),
      ('data.num_workers', compat.SAFE),
      ('data.root', compat.SAFE),
      ('eval.fid_every_steps', compat.SAFE),
      ('perf.conv_impl', compat.SAFE),
  )
  def test_kind_of(self, key, kind):
    self.assertEqual(compat.kind_of(key), kind)

  def test_every_key_of_the_default_config_is_classified_explicitly(self):
    """No default key falls through to the unknown-key default."""
    config = tiny.get_config()
    flat = compat._flatten(compat._as_json_tree(config))
    unclassified = []
    for key in flat:
      parts = key.split('.')
      if not any('.'.join(parts[:n]) in compat.KEY_KINDS
                 for n in range(1, len(parts) + 1)):
        unclassified.append(key)
    self.assertEqual(unclassified, [])


class CheckWorkdirTest(parameterized.TestCase):

  def test_model_change_names_the_keys_and_both_values(self):
    workdir = _workdir_with_config(self, tiny.get_config())
    config = tiny.get_config()
    config.generator.channels = 8
    config.data.num_classes = 5
    config.train.num_steps = 100  # Safe: not named.
    with self.assertRaises(compat.ConfigMismatchError) as ctx:
      compat.check_workdir(config, workdir)
    message = str(ctx.exception)
    self.assertIn('data.num_classes: 4 -> 5', message)
    self.assertIn('generator.channels: 2 -> 8', message)
    self.assertNotIn('num_steps', message)
    self.assertNotIn('\n', message)

  def test_safe_changes_pass_and_are_logged(self):
    workdir = _workdir_with_config(self, tiny.get_config())
    config = tiny.get_config()
    config.train.num_steps = 100
    config.optim.lr_g = 1e-3
    config.data.num_workers = 2
    with self.assertLogs(level='INFO') as logs:
      compat.check_workdir(config, workdir)
    self.assertIn('train.num_steps: 4 -> 100', ''.join(logs.output))

  def test_tuples_compare_equal_to_their_json_lists(self):
    config = tiny.get_config()
    workdir = _workdir_with_config(self, config)
    model, safe = compat.compare(
        json.load(open(os.path.join(workdir, 'config.json'))), config)
    self.assertEqual((model, safe), ({}, {}))

  def test_key_missing_from_the_old_config_is_a_change(self):
    config = tiny.get_config()
    workdir = _workdir_with_config(self, config)
    with config.unlocked():
      config.generator.extra_layers = 2  # A model key the old run lacks.
    with self.assertRaisesRegex(compat.ConfigMismatchError,
                                r"generator.extra_layers: '<absent>' -> 2"):
      compat.check_workdir(config, workdir)

  def test_keys_an_old_run_lacks_compare_as_their_defaults(self):
    config = tiny.get_config()
    workdir = self.create_tempdir()
    saved = json.loads(config.to_json_best_effort())
    del saved['discriminator']['kind']  # A model key newer than the run.
    del saved['perf']
    workdir.create_file(workdir_config.CONFIG_FILE, content=json.dumps(saved))
    compat.check_workdir(config, workdir.full_path)  # Resumes.
    config.discriminator.kind = 'spade'
    with self.assertRaisesRegex(compat.ConfigMismatchError,
                                r"discriminator.kind: 'oasis' -> 'spade'"):
      compat.check_workdir(config, workdir.full_path)

  def test_wrong_type_in_config_json_is_an_error_naming_it(self):
    workdir = self.create_tempdir()
    workdir.create_file(workdir_config.CONFIG_FILE,
                        content='{"train": {"batch_size": "4"}}')
    with self.assertRaisesRegex(
        compat.ConfigMismatchError,
        r"config.json is not a readable config: "
        r"config.train.batch_size='4': expected an integer"):
      compat.check_workdir(tiny.get_config(), workdir.full_path)

  def test_new_workdir_passes(self):
    compat.check_workdir(
        tiny.get_config(), os.path.join(self.create_tempdir().full_path, 'x'))

  def test_unreadable_config_json_is_an_error_naming_it(self):
    workdir = self.create_tempdir()
    workdir.create_file('config.json', content='{not json')
    with self.assertRaisesRegex(compat.ConfigMismatchError,
                                r'config.json is not a readable config'):
      compat.check_workdir(tiny.get_config(), workdir.full_path)

  def test_write_keeps_the_previous_config(self):
    old = tiny.get_config()
    workdir = _workdir_with_config(self, old)
    new = tiny.get_config()
    new.train.num_steps = 100
    compat.write_workdir_config(new, workdir)
    with open(os.path.join(workdir, 'config.json')) as f:
      self.assertEqual(json.load(f)['train']['num_steps'], 100)
    with open(os.path.join(workdir, 'config.previous.json')) as f:
      self.assertEqual(json.load(f)['train']['num_steps'], 4)
    self.assertNotIn('config.json.tmp', os.listdir(workdir))


if __name__ == '__main__':
  absltest.main()
