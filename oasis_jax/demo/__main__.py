"""`python -m oasis_jax.demo`: the gradio page over a trained generator."""

import sys
from typing import Sequence

from absl import app
from absl import flags
from absl import logging

from oasis_jax.demo import adapter
from oasis_jax.demo import app as demo_app
from oasis_jax.demo import labels
from oasis_jax.demo import layout
from oasis_jax.runtime import logging_utils

_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', None, 'An inference checkpoint (oasis_jax.export or '
    'oasis_jax.convert_torch).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'A training run folder.')
_STEP = flags.DEFINE_string('step', 'latest',
                            "--workdir only: 'latest', 'best' or a step.")
_PORT = flags.DEFINE_integer('port', 7860, 'The port of the page.')
_HOST = flags.DEFINE_string(
    'host', '127.0.0.1', 'The address to serve on (0.0.0.0: every interface).')
_SHARE = flags.DEFINE_bool('share', False,
                           'Also serve through a public gradio.live link.')
_CLASS_NAMES = flags.DEFINE_string(
    'class_names', None, 'A text file of class names, one per line, in id '
    'order.')


def _make_demo() -> demo_app.Demo:
  """The demo over the flags' generator, its examples and class names."""
  synth = adapter.load_synthesizer(_CHECKPOINT.value, _WORKDIR.value,
                                   _STEP.value)
  model = adapter.ModelAdapter(synth)
  examples = labels.validation_examples(model) if _WORKDIR.value else {}
  examples = examples or labels.bundled_examples(model)
  names = labels.class_names(model.data_config, model.num_classes,
                             _CLASS_NAMES.value)
  return demo_app.Demo(model, examples, names)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {list(argv[1:])}.')
  if (_WORKDIR.value is None) == (_CHECKPOINT.value is None):
    raise app.UsageError('Give exactly one of --workdir or --checkpoint.')
  if layout.gr is None:
    sys.stderr.write('ERROR: the demo needs gradio: pip install -e '
                     '".[demo]".\n')
    sys.exit(1)
  logging_utils.quiet_library_logs()
  try:
    demo = _make_demo()
  except (adapter.DemoError, FileNotFoundError, ValueError) as e:
    sys.stderr.write(f'ERROR: {e}\n')
    sys.exit(1)
  logging.info('%s', demo.model.synth)
  layout.launch(demo, server_name=_HOST.value, server_port=_PORT.value,
                share=_SHARE.value)


if __name__ == '__main__':
  app.run(main)
