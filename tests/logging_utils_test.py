"""Tests of the progress line, the image grids and the TensorBoard writer."""

import logging as std_logging
import os

from absl import logging
from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator

from oasis_jax.runtime import logging_utils


class ProgressTest(parameterized.TestCase):

  def test_progress_line_has_step_rates_eta_and_losses(self):
    line = logging_utils.format_progress(
        step=100, num_steps=1000, steps_per_sec=2.0, batch_size=8,
        metrics={'g/adv': 1.23456, 'd/real': 0.5})
    self.assertEqual(
        line, 'step 100/1000 (10%) | 2 steps/s | 16 img/s | ETA 7m30s | '
        'd/real 0.5 g/adv 1.235')

  @parameterized.parameters((5.2, '5s'), (65, '1m05s'), (3723, '1h02m03s'),
                            (float('inf'), '?'))
  def test_format_duration(self, seconds, expected):
    self.assertEqual(logging_utils.format_duration(seconds), expected)

  def test_quiet_library_logs_drops_orbax_info_but_keeps_warnings(self):
    logging_utils.quiet_library_logs()
    logging_utils.quiet_library_logs()  # Idempotent.
    handler = logging.get_absl_handler()
    quiet = [f for f in handler.filters
             if isinstance(f, logging_utils._QuietLibraries)]
    self.assertLen(quiet, 1)
    record = lambda level, path: std_logging.LogRecord(
        'absl', level, path, 1, 'message', (), None)
    orbax_file = os.path.join('site-packages', 'orbax', 'checkpoint', 'x.py')
    self.assertFalse(quiet[0].filter(record(std_logging.INFO, orbax_file)))
    self.assertTrue(quiet[0].filter(record(std_logging.WARNING, orbax_file)))
    self.assertTrue(quiet[0].filter(
        record(std_logging.INFO, os.path.join('oasis_jax', 'train.py'))))


class GridTest(parameterized.TestCase):

  def test_to_uint8_maps_minus_one_to_one_onto_bytes(self):
    np.testing.assert_array_equal(
        logging_utils.to_uint8(np.array([-1.5, -1.0, 0.0, 1.0])),
        [0, 0, 128, 255])

  def test_grid_rows_are_samples_and_columns_kinds(self):
    n, h, w = 3, 4, 5
    columns = [np.full((n, h, w, 3), 10 * j, np.uint8) +
               np.arange(n, dtype=np.uint8)[:, None, None, None]
               for j in range(4)]
    grid = logging_utils.make_grid(columns, pad=2)
    self.assertEqual(grid.shape, (n * (h + 2) + 2, 4 * (w + 2) + 2, 3))
    for i in range(n):
      for j in range(4):
        y, x = 2 + i * (h + 2), 2 + j * (w + 2)
        np.testing.assert_array_equal(grid[y:y + h, x:x + w],
                                      columns[j][i])
    self.assertTrue((grid[:2] == 255).all())  # Padding is white.

  def test_grid_scale_repeats_pixels(self):
    tile = np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3)
    grid = logging_utils.make_grid([tile], pad=0, scale=3)
    self.assertEqual(grid.shape, (6, 6, 3))
    np.testing.assert_array_equal(grid[::3, ::3], tile[0])

  def test_grid_rejects_unequal_columns(self):
    with self.assertRaisesRegex(ValueError, 'equally shaped'):
      logging_utils.make_grid([np.zeros((1, 2, 2, 3), np.uint8),
                               np.zeros((1, 3, 2, 3), np.uint8)])

  def test_save_png_round_trips(self):
    path = os.path.join(self.create_tempdir().full_path, 'a', 'grid.png')
    image = np.random.default_rng(0).integers(0, 256, (6, 7, 3), np.uint8)
    logging_utils.save_png(path, image)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), image)


class WriterTest(parameterized.TestCase):

  def test_writer_writes_scalars_and_images_readable_by_tensorboard(self):
    logdir = self.create_tempdir().full_path
    writer = logging_utils.Writer(logdir)
    writer.write_scalars(3, {'g/adv': 1.5, 'd/real': 0.25})
    writer.write_image(3, 'samples', np.zeros((4, 6, 3), np.uint8))
    writer.close()
    events = event_accumulator.EventAccumulator(logdir)
    events.Reload()
    self.assertEqual([(e.step, e.value) for e in events.Scalars('g/adv')],
                     [(3, 1.5)])
    image = events.Images('samples')[0]
    self.assertEqual((image.step, image.width, image.height), (3, 6, 4))

  def test_disabled_writer_writes_nothing(self):
    logdir = self.create_tempdir().full_path
    writer = logging_utils.Writer(logdir, enabled=False)
    writer.write_scalars(1, {'a': 1.0})
    writer.close()
    self.assertEmpty(os.listdir(logdir))


if __name__ == '__main__':
  absltest.main()
