"""Fake ADE20K / Cityscapes trees and their CPU cost per image, without Grain.

  python -m benchmarks.fake_trees [--dataset=ade20k] [--files=24]

Writes a fake tree, prints one JSON line with the CPU ms of decode +
preprocessing per image and the images/s one core sustains. Used by
benchmarks/input_pipeline.py (throughput through Grain) and
benchmarks/accelerator.py (also where Grain is not installed).
"""

import json
import shutil
import tempfile
import time

from absl import app
from absl import flags

import numpy as np
from PIL import Image

import data_pipelines
from data_pipelines import synthetic
from data_pipelines import testing
from data_pipelines import transforms
from data_pipelines import geometry

_DATASET = flags.DEFINE_string('dataset', 'ade20k', 'ade20k or cityscapes.')
_FILES = flags.DEFINE_integer('files', 24, 'Pairs in the fake tree.')

# name -> (file (height, width), classes, network image_size, aspect, crop).
SETTINGS = {
    'ade20k': ((512, 683), 151, 256, 1.0, True),
    'cityscapes': ((1024, 2048), 35, 512, 2.0, False),
}
LOAD_SIZE = 286  # ADE20K's resize before the random 256x256 crop.


def _scene(index: int, hw: tuple[int, int], num_classes: int):
  """A smooth procedural photo and its label map at `hw`."""
  small = (hw[0] // 4, hw[1] // 4)
  image, label = synthetic.generate(7, 'train', index, small, num_classes)
  image = Image.fromarray(image).resize((hw[1], hw[0]), Image.BICUBIC)
  noise = np.random.default_rng(index).normal(0, 2.0, hw + (3,))
  image = np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8)
  label = np.asarray(Image.fromarray(label.astype(np.uint8)).resize(
      (hw[1], hw[0]), Image.NEAREST))
  return image, label


def write(name: str, root: str, count: int) -> None:
  """Writes `count` training pairs of data set `name` (SETTINGS) at root."""
  hw, num_classes, _, _, _ = SETTINGS[name]
  scenes = {}

  def label_fn(i, split):
    scenes[(i, split)] = _scene(i, hw, num_classes)
    return scenes[(i, split)][1]

  def image_fn(i, split, raw):
    del raw
    return scenes.pop((i, split))[0]

  testing.write_tree(name, root, counts={'train': count}, hw=hw,
                     label_fn=label_fn, image_fn=image_fn,
                     cityscapes_extras=False)


def make_config(name: str, root: str, **data_overrides):
  """The default config reading the fake tree with the official recipe."""
  _, _, size, aspect, crop = SETTINGS[name]
  return testing.make_config(
      name, root, image_size=size, aspect_ratio=aspect,
      load_size=LOAD_SIZE if crop else size, random_crop=crop,
      **data_overrides)


def cpu_ms_per_image(name: str, root: str) -> float:
  """CPU time of decode + preprocessing per image, one thread, no Grain.

  CPU time (not wall time) barely depends on other jobs sharing the machine;
  1000 / this is the images/s one core sustains.
  """
  crop = SETTINGS[name][4]
  config = make_config(name, root)
  source = data_pipelines.make_source(config.data, 'train')
  augment = transforms.RandomCropAndFlip(
      geometry.image_hw(config.data), (LOAD_SIZE, LOAD_SIZE) if crop else None,
      flip=True)
  augment(0, source[0])
  count = 2 * len(source)
  start = time.process_time()
  for i in range(count):
    augment(i, source[i % len(source)])
  return 1000 * (time.process_time() - start) / count


def main(argv):
  del argv
  root = tempfile.mkdtemp(prefix='oasis_fake_tree_')
  try:
    start = time.perf_counter()
    write(_DATASET.value, root, _FILES.value)
    write_s = time.perf_counter() - start
    ms = cpu_ms_per_image(_DATASET.value, root)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  print(json.dumps({'benchmark': 'decode', 'dataset': _DATASET.value,
                    'files': _FILES.value, 'cpu_ms_per_image': ms,
                    'images_per_s_per_core': 1000 / ms,
                    'write_s': write_s}))


if __name__ == '__main__':
  app.run(main)
