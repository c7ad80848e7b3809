"""Runs every `python -m` command the README shows, so that none can rot.

The commands are read from the README itself: its code blocks and its inline
code. Each runs as a new user would type it, with its paths moved into a
temporary folder, real data replaced by fake trees in the same layouts, and
tiny model sizes appended (keys the README sets itself are kept as the
README has them, e.g. `--config.data.num_workers=-1`). A command that needs
what no test machine has (a GPU, downloaded weights, a browser session) runs
with `--help`, and every flag the README gives it must be one the command
defines. A module the README shows that no rule below knows fails the test:
add its rule when you document a new command.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys

from absl.testing import absltest

from data_pipelines import testing

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_README = os.path.join(_REPO, 'README.md')
_TIMEOUT_S = 600

# Tiny sizes and short runs, appended to every training command.
_TINY = (
    '--config.data.load_size=36', '--config.data.image_size=32',
    '--config.generator.channels=2', '--config.generator.z_dim=4',
    '--config.generator.num_res_blocks=3', '--config.generator.spade_hidden=8',
    '--config.discriminator.channels=(8,16,16)',
    '--config.discriminator.last_channels=8', '--config.train.batch_size=2',
    '--config.train.num_steps=2', '--config.train.log_every_steps=1',
    '--config.train.sample_every_steps=2',
    '--config.train.checkpoint_every_steps=2',
    '--config.train.num_sample_images=2', '--config.eval.fid_every_steps=-1',
    '--config.eval.batch_size=2', '--config.ema.bn_refresh_batches=1',
)
# Modules run for real (in this order: later ones read earlier outputs).
_RUN = ('data_pipelines.prepare', 'oasis_jax.main', 'data_pipelines.inspect',
        'oasis_jax.export', 'oasis_jax.generate')
# Flags whose value is a path the command writes or reads: moved into the
# test's folder (README paths such as runs/X or /data/X_prepared).
_PATH_FLAGS = ('--workdir', '--checkpoint', '--out', '--labels',
               '--config.data.prepared')
# Modules that need a GPU, published weights or a served page: --help.
_HELP = ('oasis_jax.evaluate', 'oasis_jax.convert_torch', 'oasis_jax.demo',
         'benchmarks.accelerator', 'benchmarks.train_step',
         'oasis_jax.pretrained.vgg_weights',
         'oasis_jax.pretrained.inception_weights')
# The README's test command: the suite this test is part of.
_SELF = ('pytest',)
# Fake data trees for the README's data folders, by config file.
_TREES = {'configs/ade20k.py': 'ade20k', 'configs/coco.py': 'coco_stuff',
          'configs/cityscapes.py': 'cityscapes'}


def readme_commands(text: str, *, inline: bool = False) -> list[list[str]]:
  """The `python -m` commands of the README's code blocks (or inline code).

  Line continuations are joined, comments and `[...]` optional parts
  dropped; `A && python -m B` gives `python -m B`. Inline code is prose
  (placeholders such as DIR): its commands are only checked for their flags.
  """
  if inline:
    prose = re.sub(r'```.*?```', '', text, flags=re.S)
    lines = re.findall(r'`(python -m [^`]*)`', prose)
  else:
    lines = []
    for block in re.findall(r'```[a-z]*\n(.*?)```', text, re.S):
      lines += block.replace('\\\n', ' ').splitlines()
  commands = []
  for line in lines:
    line = re.sub(r'\s#.*$', '', ' '.join(line.split()))
    line = re.sub(r'\s*\[[^\]]*\]', '', line)
    for part in line.split('&&'):
      part = part.strip()
      if part.startswith('python -m '):
        commands.append(shlex.split(part)[2:])
  return commands


def _flags(args: list[str]) -> list[str]:
  return [a.split('=')[0].lstrip('-') for a in args if a.startswith('--')]


class ReadmeCommandsTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    with open(_README) as f:
      text = f.read()
    cls.commands = readme_commands(text)
    cls.inline = readme_commands(text, inline=True)
    cls.root = os.path.realpath(
        absltest.get_default_test_tmpdir() + '/readme_commands')
    shutil.rmtree(cls.root, ignore_errors=True)
    os.makedirs(cls.root)
    cls.trees = {}
    for config, name in _TREES.items():
      root = os.path.join(cls.root, 'data', name)
      testing.write_tree(name, root, {'train': 4, 'val': 2}, hw=(40, 40))
      cls.trees[config] = root
    labels = os.path.join(cls.root, 'my_labels')
    os.makedirs(labels)
    src = os.path.join(cls.trees['configs/coco.py'], 'val_label')
    for name in sorted(os.listdir(src)):
      shutil.copy(os.path.join(src, name), labels)

  def _localize(self, args: list[str]) -> list[str]:
    """The README's paths moved to the test's folder and fake trees."""
    config = next((a.split('=', 1)[1] for a in args
                   if a.startswith('--config=')), '')
    out = []
    for arg in args:
      key, eq, value = arg.partition('=')
      if eq and key == '--config.data.root':
        value = self.trees[config]
      elif eq and key in _PATH_FLAGS:
        value = os.path.join(self.root, value.lstrip('/'))
      out.append(key + eq + value if eq else arg)
    return out

  def _run(self, args: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=_REPO,
               XLA_FLAGS='--xla_force_host_platform_device_count=1')
    return subprocess.run([sys.executable, '-m', *args], cwd=_REPO, env=env,
                          capture_output=True, text=True, check=False,
                          timeout=_TIMEOUT_S)

  def _runnable(self, module: str, args: list[str]) -> list[str]:
    args = self._localize(args)
    given = set(_flags(args))
    if module == 'oasis_jax.main':
      args += [t for t in _TINY if _flags([t])[0] not in given]
    if module == 'data_pipelines.prepare':  # The sizes training will use.
      args += [t for t in _TINY if t.startswith('--config.data.')
               and _flags([t])[0] not in given]
    return [module, *args]

  def test_the_readme_shows_its_main_commands(self):
    modules = {c[0] for c in self.commands}
    self.assertContainsSubset({'oasis_jax.main', 'pytest', 'oasis_jax.export',
                               'oasis_jax.generate'}, modules)

  def test_every_command_has_a_rule(self):
    unknown = {c[0] for c in self.commands} - set(_RUN + _HELP + _SELF)
    self.assertEmpty(unknown, 'README commands without a rule in '
                     f'tests/readme_commands_test.py: {sorted(unknown)}')

  def test_commands_run(self):
    order = {m: i for i, m in enumerate(_RUN)}
    runs = sorted((c for c in self.commands if c[0] in order),
                  key=lambda c: order[c[0]])
    for command in runs:
      argv = self._runnable(command[0], command[1:])
      with self.subTest(' '.join(command)):
        result = self._run(argv)
        self.assertEqual(result.returncode, 0,
                         f'{shlex.join(argv)}\n{result.stderr[-3000:]}')
        self._check_outputs(command[0], argv)

  def _check_outputs(self, module: str, argv: list[str]):
    values = dict(a[2:].split('=', 1) for a in argv if a.startswith('--')
                  and '=' in a)
    if module == 'oasis_jax.main':
      samples = os.path.join(values['workdir'], 'samples')
      self.assertIn('00000002.png', os.listdir(samples))
    elif module == 'oasis_jax.export':
      self.assertTrue(os.path.isdir(values['out']))
    elif module == 'oasis_jax.generate':
      self.assertNotEmpty(os.listdir(values['out']))
    elif module == 'data_pipelines.prepare':
      self.assertIn('prepared.json', os.listdir(values['out']))

  def test_help_commands_define_the_flags_the_readme_uses(self):
    helped = [c for c in self.commands if c[0] in _HELP] + self.inline
    defined_by = {}  # Module -> the flags its --helpfull lists (once each).
    for command in helped:
      with self.subTest(' '.join(command)):
        if command[0] not in defined_by:
          result = self._run([command[0], '--helpfull'])
          # absl prints the usage and every flag, then exits with 1.
          self.assertNotIn('Traceback', result.stderr,
                           result.stderr[-3000:])
          defined_by[command[0]] = set(re.findall(
              r'^\s+--(?:\[no\])?([\w.]+):', result.stdout, re.M))
        defined = defined_by[command[0]]
        self.assertIn('helpfull', defined)
        for flag in _flags(command[1:]):
          if not flag.startswith('config.'):  # Checked by the runs above.
            self.assertIn(flag, defined, f'{command[0]} has no --{flag}')

  def test_parser_reads_blocks_inline_code_and_continuations(self):
    text = ('```bash\npip install x && python -m a.b --x=1 \\\n    --y=2'
            '  # note\npython -c "import jax"\n```\nSee `python -m c.d\n'
            '--z=3 [--opt=4]`.')
    self.assertEqual(readme_commands(text), [['a.b', '--x=1', '--y=2']])
    self.assertEqual(readme_commands(text, inline=True), [['c.d', '--z=3']])


if __name__ == '__main__':
  absltest.main()
