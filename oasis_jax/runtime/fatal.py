"""Expected failures of the command-line tools as one `FATAL ...` line.

`run_main(main)` is `absl.app.run(main)` for the programs (main, generate,
evaluate, export, data_pipelines.inspect): an expected failure (bad config,
bad data, a workdir that cannot be written, a NaN loss, damaged checkpoints,
a full disk) prints one line `FATAL <what happened>` to stderr and exits
with status 1; so does an error raised inside Orbax or TensorStore (a damaged
checkpoint). The traceback is printed too with `--verbose`. A Ctrl-C that
the program does not catch itself (main catches the first) prints `FATAL
interrupted` and exits with 130. Anything else is a bug and keeps Python's
traceback.
"""

import os
import sys
import traceback
from typing import Callable, Optional, Sequence

from absl import app
from absl import flags
from absl import logging

_VERBOSE = flags.DEFINE_bool(
    'verbose', False, 'On an expected failure, print the traceback under '
    'the FATAL line.')

EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention.


class Error(Exception):
  """An expected failure whose message is the whole story (one line)."""


# Exceptions of expected failures. Our own (DataError, ConfigError, ...) are
# ValueError / OSError / Error subclasses; ValueError and OSError also cover
# library errors about the user's input (a file that is not a checkpoint, a
# workdir that is a file, a read-only or full disk).
EXPECTED = (Error, ValueError, OSError, FloatingPointError)


# Errors raised inside these packages are about the checkpoint files read
# (truncated, garbled, of another model), whatever their type.
CHECKPOINT_LIBRARIES = ('orbax', 'tensorstore')
_MAX_CHARS = 600  # Library messages can hold pages of specs.


def raised_in(error: BaseException, packages: Sequence[str]) -> bool:
  """Whether `error` was raised in a module of one of `packages`."""
  frames = traceback.extract_tb(error.__traceback__)
  if not frames:
    return False
  parts = frames[-1].filename.split(os.sep)
  return any(p in parts for p in packages)


def one_line(error: BaseException) -> str:
  """The message of `error` on one line (its type when it has none)."""
  text = str(error).split('. See full TensorStore details')[0]
  text = ' '.join(text.split())
  if len(text) > _MAX_CHARS:
    text = text[:_MAX_CHARS - 3] + '...'

  if isinstance(error, KeyboardInterrupt):
    return text
  if isinstance(error, KeyError) or not text:
    text = f'{type(error).__name__}: {text}' if text else type(error).__name__
  return text


def report(error: BaseException, prefix: str = '') -> None:
  """Writes `FATAL <prefix><message>` (and the traceback with --verbose)."""
  if flags.FLAGS.is_parsed() and _VERBOSE.value:
    traceback.print_exception(error, file=sys.stderr)
  else:
    logging.debug('FATAL traceback', exc_info=error)
  sys.stderr.write(f'FATAL {prefix}{one_line(error)}\n')
  sys.stderr.flush()


def guard(main: Callable[[Sequence[str]], Optional[int]],
          expected: tuple[type[BaseException], ...] = EXPECTED
          ) -> Callable[[Sequence[str]], Optional[int]]:
  """`main` with expected exceptions turned into one FATAL line, exit 1."""

  def guarded(argv: Sequence[str]) -> Optional[int]:
    try:
      return main(argv)
    except app.UsageError:
      raise
    except expected as e:  # pylint: disable=catching-non-exception
      report(e)
      sys.exit(EXIT_FAILURE)
    except Exception as e:  # pylint: disable=broad-exception-caught
      if not raised_in(e, CHECKPOINT_LIBRARIES):
        raise
      report(e, prefix='checkpoint: ')  # A damaged or foreign checkpoint.
      sys.exit(EXIT_FAILURE)
    except KeyboardInterrupt as e:  # A Ctrl-C that was not caught.
      report(e, prefix='interrupted')
      sys.exit(EXIT_INTERRUPTED)

  return guarded


def run_main(main: Callable[[Sequence[str]], Optional[int]], **kwargs
             ) -> None:
  """absl.app.run(guard(main), **kwargs)."""
  app.run(guard(main), **kwargs)
