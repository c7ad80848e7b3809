"""Label maps the page offers (bundled, validation) and the class names."""

import os
from typing import Optional

from absl import logging
import numpy as np

import data_pipelines
from data_pipelines import class_names as class_names_lib
from data_pipelines import transforms
from oasis_jax.demo import adapter

# The package's example label maps (oasis_jax/examples).
EXAMPLES_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'examples')
NUM_VALIDATION_EXAMPLES = 6  # Validation label maps offered with --workdir.


def class_names(data_config, num_classes: int,
                names_file: Optional[str] = None) -> list[str]:
  """'id: name' for every class id (names from a file, the data set, or ids).

  Args:
    data_config: `config.data` (its name picks a table of CLASS_NAMES).
    num_classes: how many ids.
    names_file: optional text file, one name per line, in id order.

  Returns:
    num_classes strings.
  """
  names = class_names_lib.CLASS_NAMES.get(data_config.name, ())
  if names_file:
    with open(names_file) as f:
      names = [line.strip() for line in f if line.strip()]
  dontcare = int(data_config.dontcare_id)
  out = []
  for i in range(num_classes):
    if i < len(names):
      out.append(f'{i}: {names[i]}')
    else:
      out.append(f'{i}: unlabeled' if i == dontcare else f'{i}: class {i}')
  return out


def bundled_examples(model: adapter.ModelAdapter,
                     directory: str = EXAMPLES_DIR) -> dict[str, np.ndarray]:
  """The example label maps that fit the model, by file stem.

  Examples with class ids the model lacks are left out (logged).
  """
  examples = {}
  if not os.path.isdir(directory):
    logging.warning('No example label maps: %s is missing.', directory)
    return examples
  for name in sorted(os.listdir(directory)):
    if not name.endswith('.png'):
      continue
    try:
      examples[os.path.splitext(name)[0]] = model.read_label_file(
          os.path.join(directory, name))
    except adapter.DemoError as e:
      logging.warning('Example left out: %s', e)
  return examples


def validation_examples(model: adapter.ModelAdapter,
                        num: int = NUM_VALIDATION_EXAMPLES
                        ) -> dict[str, np.ndarray]:
  """The first `num` validation label maps of the model's data set.

  Empty (logged) when the data set cannot be read here.
  """
  try:
    source = data_pipelines.make_source(model.data_config, 'val',
                                        allow_build=False)
    count = min(num, len(source))
    return {f'validation {i}': transforms.resize_label(
        source[i]['label'], model.image_hw) for i in range(count)}
  except (data_pipelines.DataError, OSError) as e:
    logging.warning('No validation label maps: %s', e)
    return {}
