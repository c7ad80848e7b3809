"""Tests of reading a saved config.json merged onto the defaults."""

import itertools
import json
import os
import subprocess
import sys

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from PIL import Image

from configs import default
from configs import lvis
from configs import tiny
from data_pipelines.lvis import dataset as lvis_data
from oasis_jax.config import workdir as workdir_config

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TIMEOUT_S = 300

# config.json damaged two ways: (contents, what the FATAL line says of it).
_DAMAGE = {
    'bad_json': ('{\n  "seed": 0,\n  "train": {\n    "batch_size": 4,\n'
                 '    "num_steps": 4,\n    "log_every_steps": ,\n  }\n}',
                 'Expecting value: line 6 column 24'),
    'wrong_type': ('{"train": {"batch_size": "four"}}',
                   "config.train.batch_size='four': expected an integer"),
}

def _saved(config) -> dict:
  return json.loads(config.to_json_best_effort())


class ReadTest(parameterized.TestCase):

  def _write(self, content) -> str:
    folder = self.create_tempdir()
    if not isinstance(content, str):
      content = json.dumps(content)
    folder.create_file(workdir_config.CONFIG_FILE, content=content)
    return folder.full_path

  @parameterized.parameters(tiny, lvis, default)
  def test_a_written_config_reads_back_equal(self, module):
    config = module.get_config()
    folder = self._write(config.to_json_best_effort(indent=2))
    read = workdir_config.read(folder)
    self.assertEqual(read.to_dict(), config.to_dict())
    self.assertIsInstance(read.discriminator.channels, tuple)

  def test_keys_an_old_file_lacks_take_their_defaults(self):
    saved = _saved(tiny.get_config())
    del saved['perf']
    del saved['discriminator']['kind']
    del saved['data']['source']
    read = workdir_config.read(self._write(saved))
    defaults = default.get_config()
    self.assertEqual(read.perf.to_dict(), defaults.perf.to_dict())
    self.assertEqual(read.discriminator.kind, 'oasis')
    self.assertEqual(read.data.source, defaults.data.source)
    self.assertEqual(read.generator.channels, 2)  # Saved values are kept.

  def test_a_data_set_s_own_keys_take_its_defaults(self):
    saved = _saved(lvis.get_config())
    for key in lvis_data.DEFAULTS:
      del saved['data'][key]
    saved['data']['paint_order'] = 'small_on_top'
    read = workdir_config.read(self._write(saved))
    self.assertEqual(read.data.paint_order, 'small_on_top')
    self.assertEqual(read.data.keep_unannotated_val,
                     lvis_data.DEFAULTS['keep_unannotated_val'])
    self.assertNotIn('paint_order',
                     workdir_config.read(self._write(_saved(
                         tiny.get_config()))).data)

  def test_keys_outside_the_schema_are_kept(self):
    saved = _saved(tiny.get_config())
    saved['generator']['retired_option'] = 3
    saved['retired_section'] = {'key': 'value'}
    read = workdir_config.read(self._write(saved))
    self.assertEqual(read.generator.retired_option, 3)
    self.assertEqual(read.retired_section.key, 'value')

  def test_values_take_the_type_of_their_default(self):
    saved = {'optim': {'lr_g': 1}, 'train': {'keep_checkpoints': None},
             'discriminator': {'channels': [4, 8]}}
    read = workdir_config.read(self._write(saved))
    self.assertEqual(read.optim.lr_g, 1.0)
    self.assertIsInstance(read.optim.lr_g, float)
    self.assertIsNone(read.train.keep_checkpoints)
    self.assertEqual(read.discriminator.channels, (4, 8))

  @parameterized.named_parameters(
      ('bad_json', '{\n  "train": {\n    "num_steps": \n}',
       r'Expecting value: line 4'),
      ('not_an_object', '[1, 2]', r'a JSON object is expected'),
      ('wrong_type', {'train': {'num_steps': 'many'}},
       r"config.train.num_steps='many': expected an integer"),
      ('bool_for_int', {'train': {'batch_size': True}},
       r'config.train.batch_size=True: expected an integer'),
      ('int_for_bool', {'ema': {'use_ema': 1}},
       r'config.ema.use_ema=1: expected a boolean'),
      ('value_for_section', {'generator': 4},
       r'config.generator=4: expected a section'),
      ('bad_list', {'discriminator': {'channels': ['wide']}},
       r"config.discriminator.channels=\['wide'\]: expected a list"),
      ('null', {'train': {'num_steps': None}},
       r'config.train.num_steps=None: expected an integer'),
      ('not_utf8', b'\xff\xfe{', r"'utf-8' codec can't decode"),
  )
  def test_a_damaged_file_is_one_line_naming_it(self, content, detail):
    folder = self.create_tempdir()
    path = os.path.join(folder.full_path, workdir_config.CONFIG_FILE)
    if isinstance(content, dict):
      content = json.dumps(content)
    with open(path, 'wb') as f:
      f.write(content if isinstance(content, bytes) else content.encode())
    with self.assertRaises(workdir_config.ConfigFileError) as ctx:
      workdir_config.read(folder.full_path)
    message = str(ctx.exception)
    self.assertStartsWith(message, f'{path} is not a readable config: ')
    self.assertRegex(message, detail)
    self.assertNotIn('\n', message)
    self.assertIsInstance(ctx.exception, ValueError)  # fatal.EXPECTED.

  def test_a_missing_file_names_it(self):
    empty = self.create_tempdir().full_path
    with self.assertRaisesRegex(
        FileNotFoundError,
        f'{os.path.join(empty, workdir_config.CONFIG_FILE)} is missing'):
      workdir_config.read(empty)


class CommandsTest(parameterized.TestCase):
  """Every command reading a workdir stops on a damaged config.json."""

  def _command(self, name, workdir):
    root = self.create_tempdir()
    if name == 'main':  # Resuming: the workdir's config is checked first.
      config = os.path.join(_REPO, 'configs', 'tiny.py')
      return ['oasis_jax.main', f'--config={config}', f'--workdir={workdir}']
    if name == 'generate':
      labels = root.mkdir('labels').full_path
      Image.fromarray(np.zeros((32, 32), np.uint8)).save(
          os.path.join(labels, 'a.png'))
      return ['oasis_jax.generate', f'--workdir={workdir}',
              f'--labels={labels}', f'--out={root.full_path}/out']
    if name == 'export':
      return ['oasis_jax.export', f'--workdir={workdir}',
              f'--out={root.full_path}/out']
    return ['oasis_jax.evaluate', f'--workdir={workdir}']

  @parameterized.parameters(itertools.product(
      ('generate', 'evaluate', 'export', 'main'), sorted(_DAMAGE)))
  def test_damaged_config_json_is_one_fatal_line_naming_it(self, name,
                                                           damage):
    content, detail = _DAMAGE[damage]
    workdir = self.create_tempdir()
    path = workdir.create_file(workdir_config.CONFIG_FILE,
                               content=content).full_path
    env = dict(os.environ, PYTHONPATH=_REPO,
               XLA_FLAGS='--xla_force_host_platform_device_count=1')
    done = subprocess.run(
        [sys.executable, '-m'] + self._command(name, workdir.full_path),
        cwd=_REPO, env=env, capture_output=True, text=True, check=False,
        timeout=_TIMEOUT_S)
    self.assertEqual(done.returncode, 1, done.stderr[-3000:])
    fatal = [line for line in done.stderr.splitlines()
             if line.startswith('FATAL')]
    self.assertLen(fatal, 1, done.stderr[-3000:])
    self.assertStartsWith(fatal[0],
                          f'FATAL {path} is not a readable config: {detail}')
    self.assertNotIn('Traceback', done.stderr)
    self.assertEqual(os.listdir(workdir.full_path),
                     [workdir_config.CONFIG_FILE])  # Nothing written.


if __name__ == '__main__':
  absltest.main()
