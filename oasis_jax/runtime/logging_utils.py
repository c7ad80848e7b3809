"""What a person watches: the progress line, TensorBoard events, image grids.

TensorBoard event files are written with tensorboardX (no TensorFlow) into
`DIR/tensorboard/`; sample grids also go to `DIR/samples/<step>.png`.
"""

import logging as std_logging
import math
import os
import time
from typing import Mapping, Optional

from absl import logging
from etils import epath
import numpy as np
from PIL import Image

TENSORBOARD_DIR = 'tensorboard'
SAMPLES_DIR = 'samples'
GRID_COLUMNS = ('label', 'real', 'G', 'EMA G')


_CHATTY = (os.sep + 'orbax' + os.sep, os.sep + 'grain' + os.sep)


class _QuietLibraries(std_logging.Filter):
  """Drops INFO records of Orbax and Grain (one screenful per checkpoint).

  Their warnings and errors pass, without tracebacks.
  """

  def filter(self, record: std_logging.LogRecord) -> bool:
    if record.levelno >= std_logging.WARNING:
      if record.exc_info and any(p in record.pathname for p in _CHATTY):
        # Orbax logs a failed save's traceback; the error reaches the
        # caller too, which reports it (one FATAL line, --verbose: all).
        record.exc_info, record.exc_text = None, None
      return True
    if record.name.startswith('jax._src.xla_bridge'):
      return False  # "Unable to initialize backend 'tpu'" on every start.
    return not any(p in record.pathname for p in _CHATTY)


def quiet_library_logs() -> None:
  """Keeps the console to our progress lines: libraries log warnings only."""
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _QuietLibraries) for f in handler.filters):
    handler.addFilter(_QuietLibraries())


def format_duration(seconds: float) -> str:
  """'1h02m03s', '4m05s' or '6s'; '?' when unknown."""
  if not math.isfinite(seconds) or seconds < 0:
    return '?'
  s = int(round(seconds))
  h, rem = divmod(s, 3600)
  m, s = divmod(rem, 60)
  if h:
    return f'{h}h{m:02d}m{s:02d}s'
  return f'{m}m{s:02d}s' if m else f'{s}s'


def format_progress(step: int, num_steps: int, steps_per_sec: float,
                    batch_size: int, metrics: Mapping[str, float]) -> str:
  """The console progress line.

  Example: 'step 120/2000 (6%) | 2.31 steps/s | 18.5 img/s | ETA 13m34s |
  d/fake 0.512 d/real 0.498 ... g/adv 1.234'.
  """
  eta = (num_steps - step) / steps_per_sec if steps_per_sec > 0 else math.inf
  losses = ' '.join(f'{k} {v:.4g}' for k, v in sorted(metrics.items()))
  return (f'step {step}/{num_steps} ({100 * step // max(num_steps, 1)}%) | '
          f'{steps_per_sec:.3g} steps/s | {steps_per_sec * batch_size:.3g} '
          f'img/s | ETA {format_duration(eta)} | {losses}')


class StepTimer:
  """Steps per second between two calls of `rate`."""

  def __init__(self, step: int):
    self._step, self._time = step, time.perf_counter()

  def rate(self, step: int) -> float:
    """Steps per second since the last call (or the start); resets."""
    now = time.perf_counter()
    steps, seconds = step - self._step, now - self._time
    self._step, self._time = step, now
    return steps / seconds if seconds > 0 else 0.0


def to_uint8(image: np.ndarray) -> np.ndarray:
  """Images in [-1, 1] -> uint8 in [0, 255]."""
  image = (np.asarray(image, np.float32) + 1.0) * 127.5
  return np.clip(np.round(image), 0, 255).astype(np.uint8)


def make_grid(columns: list[np.ndarray], pad: int = 2,
              scale: int = 1) -> np.ndarray:
  """Lays out images as rows of samples and columns of kinds.

  Args:
    columns: equally shaped [N, H, W, 3] uint8 arrays, e.g. (colourised
      label, real image, G, EMA G); row i shows sample i of each.
    pad: white pixels between tiles and around the grid.
    scale: each pixel drawn as scale x scale pixels (small images).

  Returns:
    [N*(s*H+pad)+pad, C*(s*W+pad)+pad, 3] uint8, s = scale.
  """
  for c in columns:
    if c.shape != columns[0].shape or c.dtype != np.uint8:
      raise ValueError('grid columns must be equally shaped uint8 arrays; '
                       f'got {[(x.shape, x.dtype) for x in columns]}.')
  if scale > 1:
    columns = [c.repeat(scale, axis=1).repeat(scale, axis=2) for c in columns]
  n, h, w, _ = columns[0].shape
  grid = np.full((n * (h + pad) + pad, len(columns) * (w + pad) + pad, 3),
                 255, np.uint8)
  for j, col in enumerate(columns):
    for i in range(n):
      y, x = pad + i * (h + pad), pad + j * (w + pad)
      grid[y:y + h, x:x + w] = col[i]
  return grid


def save_png(path, image: np.ndarray) -> None:
  """Writes a uint8 [H, W, 3] image (creating the folder)."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open('wb') as f:
    Image.fromarray(image).save(f, format='PNG')


class Writer:
  """TensorBoard scalars and images via tensorboardX; a no-op if disabled.

  Only process 0 writes (pass enabled=jax.process_index() == 0).
  """

  def __init__(self, logdir, enabled: bool = True):
    self._writer = None
    if enabled:
      import tensorboardX  # pylint: disable=g-import-not-at-top
      self._writer = tensorboardX.SummaryWriter(str(logdir))

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if self._writer is not None:
      for k, v in scalars.items():
        self._writer.add_scalar(k, float(v), step)

  def write_image(self, step: int, tag: str, image: np.ndarray) -> None:
    """image: [H, W, 3] uint8."""
    if self._writer is not None:
      self._writer.add_image(tag, image, step, dataformats='HWC')

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None


def log_progress(step: int, num_steps: int, steps_per_sec: float,
                 batch_size: int, metrics: Mapping[str, float],
                 writer: Optional[Writer] = None) -> None:
  """Prints the progress line and writes the losses to TensorBoard."""
  logging.info('%s', format_progress(step, num_steps, steps_per_sec,
                                     batch_size, metrics))
  if writer is not None:
    writer.write_scalars(step, {**metrics, 'perf/steps_per_sec':
                                steps_per_sec})
