"""Images for label maps: `python -m oasis_jax.generate`.

  python -m oasis_jax.generate (--workdir=DIR [--step=best] | --checkpoint=DIR)
      --labels=DIR_OR_FILES --out=DIR [--num_samples=K] [--seed=S]
      [--edit_classes=ID,...]

Reads label PNGs (a folder's *.png, or comma-separated files) with the policy
of `data_pipelines.label_maps` (as in training): 8-bit or 16-bit class ids, or
RGB colours of the model's palette (the data set's, see palettes.py). Every
file is checked before anything is generated; a class id outside the model's
range is an error naming the file. Label maps of another size are resized
(nearest) to the model's size.

Writes, for each label file `<stem>.png`:
  OUT/<stem>_<k>.png        sample k = 0..K-1 (noise: seed, the stem, k)
  OUT/<stem>_<k>_edit.png   with --edit_classes: sample k with the noise
                            resampled inside those classes (local editing)
  OUT/grids/<stem>.png      colourised label | samples (second row: the
                            edited region | the edited samples)
The same --seed gives the same images whatever the other files are.
"""

import os
import sys
import zlib
from typing import Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np
from PIL import Image

import data_pipelines
from data_pipelines import label_maps
from oasis_jax.runtime import compilation_cache
from oasis_jax.runtime import fatal
from oasis_jax.inference import synthesis
from oasis_jax.runtime import logging_utils

GRIDS_DIR = 'grids'
_EDIT_TINT = np.array([255, 255, 255], np.float32)  # Edit region highlight.


# A label file that cannot be used with the model; names the file.
LabelError = data_pipelines.DataError


def list_label_files(labels: str) -> list[str]:
  """A folder's *.png files (sorted), or comma-separated file paths."""
  if os.path.isdir(labels):
    files = sorted(os.path.join(labels, f) for f in os.listdir(labels)
                   if f.lower().endswith('.png'))
    if not files:
      raise LabelError(f'{labels}: no .png label files in this folder.')
    return files
  files = [f for f in (s.strip() for s in labels.split(',')) if f]
  missing = [f for f in files if not os.path.isfile(f)]
  if not files or missing:
    raise LabelError(f'--labels={labels!r}: not a folder, and these files do '
                     f'not exist: {missing or files}.')
  stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
  twice = sorted({s for s in stems if stems.count(s) > 1})
  if twice:
    raise LabelError(f'label files with the same name {twice} would write '
                     'the same outputs.')
  return files


def read_label(path: str, num_classes: int, palette: np.ndarray,
               size: Optional[tuple[int, int]] = None,
               remap=None) -> np.ndarray:
  """A label PNG -> int32 [H, W] class ids of the model.

  The policy of `data_pipelines.label_maps` (as in training): single-channel
  images hold ids; RGB(A) images hold colours of `palette`, or ids when grey.

  Args:
    path: the PNG.
    num_classes: ids must be < this.
    palette: [num_classes, 3] uint8, the model's colours.
    size: (H, W) to resize to (nearest), or None.
    remap: optional function raw ids -> class ids (a data set's on-disk
      convention, e.g. COCO-Stuff's v -> v + 1), for id images only
      (palette colours are the model's ids).

  Raises:
    LabelError: naming the file: unreadable, unknown colours, ids outside
      [0, num_classes).
  """
  hint = ('' if remap is not None else
          ' (labels in a data set\'s on-disk convention, e.g. COCO-Stuff\'s'
          ' 0..181 and 255? use --label_values=dataset)')
  label = label_maps.read_label(
      path, num_classes, remap=remap, hint=hint,
      palette=label_maps.PaletteMatcher(palette, "of the model"))
  if size is not None and label.shape != tuple(size):
    h, w = size
    if abs(label.shape[1] / label.shape[0] - w / h) > 1e-3:
      logging.warning('%s: %dx%d (HxW) resized to %dx%d, another aspect '
                      'ratio.', path, label.shape[0], label.shape[1], h, w)
    label = np.asarray(Image.fromarray(label).resize((w, h), Image.NEAREST))
  return label


def _stream(stem: str) -> int:
  """The noise stream of a label file: a stable hash of its name."""
  return zlib.crc32(stem.encode('utf-8'))


def _dataset_remap(config):
  """The on-disk -> class id function of config.data.name, or None."""
  module = data_pipelines.FOLDER_DATASETS.get(config.data.name)
  return getattr(module, 'remap_labels', None)


def _highlight(colour: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """The colourised label with the edit region lightened, the rest dimmed."""
  out = colour.astype(np.float32)
  out = np.where(mask[..., None], 0.5 * out + 0.5 * _EDIT_TINT, 0.4 * out)
  return out.astype(np.uint8)


def run(synth: synthesis.Synthesizer, label_files: Sequence[str],
        out_dir: str, *, num_samples: int = 1, seed: int = 0,
        edit_classes: Sequence[int] = (), edit_seed: Optional[int] = None,
        label_values: str = 'ids') -> list[str]:
  """Generates and writes the images of `label_files` (see the module doc).

  Args:
    synth: the generator.
    label_files: label PNGs.
    out_dir: the output folder (created).
    num_samples: samples per label map.
    seed: the noise seed.
    edit_classes: class ids whose pixels get new noise (edited copies).
    edit_seed: the seed of the edit noise (default seed + 1).
    label_values: 'ids' (pixel values are class ids) or 'dataset' (the data
      set's on-disk convention, e.g. COCO-Stuff's v -> v + 1, 255 -> 0).

  Returns:
    The written files.

  Raises:
    LabelError: a label file that does not fit the model (before anything
      is written).
  """
  if label_values not in ('ids', 'dataset'):
    raise ValueError(f"label_values must be 'ids' or 'dataset', got "
                     f'{label_values!r}.')
  remap = _dataset_remap(synth.config) if label_values == 'dataset' else None
  bad_edit = [c for c in edit_classes if not 0 <= c < synth.num_classes]
  if bad_edit:
    raise LabelError(f'--edit_classes {bad_edit} are outside [0, '
                     f'{synth.num_classes}).')
  if edit_classes and synth.z_dim is None:
    raise LabelError('--edit_classes needs a model with 3D noise.')
  size = synth.image_hw
  labels = [read_label(f, synth.num_classes, synth.palette, size, remap)
            for f in label_files]  # All checked before anything is written.
  stems = [os.path.splitext(os.path.basename(f))[0] for f in label_files]
  edit_seed = seed + 1 if edit_seed is None else edit_seed
  k = int(num_samples)
  os.makedirs(os.path.join(out_dir, GRIDS_DIR), exist_ok=True)
  written = []
  group = max(1, synth.batch_size // k)
  for start in range(0, len(labels), group):
    batch = np.stack(labels[start:start + group])
    names = stems[start:start + group]
    streams = [_stream(s) for s in names]
    samples = synth.sample(batch, k, seed=seed, streams=streams)
    edits = None
    if edit_classes:
      # One edit call per file keeps each file's edit noise independent of
      # the batch it falls in.
      edits = np.stack([
          synth.resample_region(
              np.repeat(batch[i:i + 1], k, axis=0),
              synth.noise(seed, k, stream=s), list(edit_classes),
              seed=edit_seed, stream=s)[0]
          for i, s in enumerate(streams)])
    for i, stem in enumerate(names):
      images = synth.to_uint8(samples[i])
      for j in range(k):
        written.append(_save(os.path.join(out_dir, f'{stem}_{j}.png'),
                             images[j]))
      colour = synth.colorize(batch[i])
      columns = [np.stack([colour])] + [img[None] for img in images]
      if edits is not None:
        edited = synth.to_uint8(edits[i])
        for j in range(k):
          written.append(_save(os.path.join(out_dir, f'{stem}_{j}_edit.png'),
                               edited[j]))
        mask = np.isin(batch[i], list(edit_classes))
        columns = [np.stack([colour, _highlight(colour, mask)])] + [
            np.stack([images[j], edited[j]]) for j in range(k)]
      grid = logging_utils.make_grid(columns)
      written.append(_save(os.path.join(out_dir, GRIDS_DIR, f'{stem}.png'),
                           grid))
  return written


def _save(path: str, image: np.ndarray) -> str:
  logging_utils.save_png(path, image)
  return path


def define_flags() -> None:
  """The command line flags (defined only when run as a program)."""
  flags.DEFINE_string('workdir', None, 'A training run folder.')
  flags.DEFINE_string('step', 'latest',
                      "--workdir only: 'latest', 'best' or a step.")
  flags.DEFINE_integer(
      'refresh_batches', -1, '--workdir only: BN refresh batches of the EMA '
      'generator (-1: config.ema.bn_refresh_batches; needs the training '
      'data).')
  flags.DEFINE_string(
      'checkpoint', None, 'An inference checkpoint (oasis_jax.export or '
      'oasis_jax.convert_torch).')
  flags.DEFINE_string(
      'labels', None, 'A folder of label PNGs, or comma-separated PNG files.')
  flags.DEFINE_string('out', None, 'Output folder.')
  flags.DEFINE_integer('num_samples', 1, 'Samples per label map.')
  flags.DEFINE_integer('seed', 0, 'Noise seed.')
  flags.DEFINE_list(
      'edit_classes', [], 'Class ids whose region gets new noise (writes '
      'edited copies next to the samples).')
  flags.DEFINE_integer('edit_seed', None,
                       'Seed of the edit noise (default seed + 1).')
  flags.DEFINE_enum(
      'label_values', 'ids', ['ids', 'dataset'],
      "Pixel values of single-channel labels: the model's class 'ids', or the "
      "data set's on-disk convention ('dataset': COCO-Stuff v -> v + 1, "
      '255 -> 0).')
  flags.DEFINE_integer('batch_size', 8, 'Images per device call.')


def main(argv: Sequence[str]) -> None:
  f = flags.FLAGS
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {list(argv[1:])}.')
  if (f.workdir is None) == (f.checkpoint is None):
    raise app.UsageError('Give exactly one of --workdir or --checkpoint.')
  if not f.labels or not f.out:
    raise app.UsageError('--labels and --out are required.')
  logging_utils.quiet_library_logs()
  compilation_cache.enable()
  try:
    edit_classes = [int(c) for c in f.edit_classes]
  except ValueError:
    raise app.UsageError(f'--edit_classes={f.edit_classes}: integers '
                         'expected.') from None
  try:
    files = list_label_files(f.labels)
    if f.checkpoint:
      synth = synthesis.Synthesizer.from_checkpoint(
          f.checkpoint, batch_size=f.batch_size)
    else:
      refresh = f.refresh_batches if f.refresh_batches >= 0 else None
      synth = synthesis.Synthesizer.from_workdir(
          f.workdir, f.step, refresh_batches=refresh,
          batch_size=f.batch_size)
    logging.info('%s', synth)
    written = run(synth, files, f.out, num_samples=f.num_samples,
                  seed=f.seed, edit_classes=edit_classes,
                  edit_seed=f.edit_seed, label_values=f.label_values)
  except (LabelError, FileNotFoundError) as e:
    fatal.report(e)
    sys.exit(fatal.EXIT_FAILURE)
  print(f'wrote {len(written)} images for {len(files)} label map(s) to '
        f'{f.out}')


if __name__ == '__main__':
  define_flags()
  fatal.run_main(main)
