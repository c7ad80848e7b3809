"""One case of benchmarks/accelerator.py, run in a process of its own.

  python -m benchmarks.accelerator_case '{"kind": "train", ...}'

Prints MARK and the result as one JSON line. Imports the model and the
configs (ml_collections): benchmarks/accelerator.py only starts this module,
so that it runs where those are missing.
"""

import ast
import importlib
import json
import sys
from typing import Any

from benchmarks import measure

MARK = 'ACCELERATOR_CASE '


def parse_value(text: str) -> Any:
  """'False' -> False, '3' -> 3, 'dense' -> 'dense'."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def make_config(case: dict):
  """The case's config: configs.<name> with the sizes, dtype and overrides."""
  config = importlib.import_module(f'configs.{case["config"]}').get_config()
  config.data.image_size = case['image_size']
  config.data.load_size = case['image_size']
  config.train.batch_size = case['batch_size']
  config.perf.compute_dtype = case['dtype']
  for key, value in case.get('overrides', {}).items():
    *path, name = key.split('.')
    node = config
    for part in path:
      node = getattr(node, part)
    setattr(node, name, value)
  return config


def run_case(case: dict) -> dict:
  """Runs one model case in this process: kind 'train' or 'inference'."""
  config = make_config(case)
  if case['kind'] == 'train':
    return measure.train(config, case['warmup'], case['runs'],
                         donate=case.get('donate', True),
                         flops=case.get('flops'))
  return measure.inference(config, case['warmup'], case['runs'],
                           flops=case.get('flops'))


def main(argv) -> None:
  if len(argv) != 2:
    sys.exit(f'Usage: python -m benchmarks.accelerator_case CASE_JSON; got '
             f'{argv[1:]}.')
  print(MARK + json.dumps(run_case(json.loads(argv[1]))), flush=True)


if __name__ == '__main__':
  main(sys.argv)
