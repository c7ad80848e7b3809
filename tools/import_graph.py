"""Prints the project's import graph; fails if an import goes up the layers.

  python tools/import_graph.py          # the graph, then violations (exit 1)

The layers, bottom first (a module imports modules of its own layer or of a
layer below; within a layer the imports must not form a cycle):

  base       geometry, weights, noise, batching, sharding, logging_utils,
             host_memory, palette_data, data_pipelines.errors,
             compilation_cache, cpu_workers, fatal, config_compat,
             config_validation: no project imports (plain helpers and one
             fact each)
  data       data_pipelines.*: data sets, label maps, Grain sources
  config     oasis_jax.config_lib: the config resolved once (the only
             platform query)
  kernels    oasis_jax.kernels.*: faster formulations of the model's numbers
  models     oasis_jax.models.*: the paper (and the ablation's networks)
  pieces     train_state, losses, palettes, input_pipeline, inception,
             lpips, fid, metrics, vgg_weights
  steps      steps, checkpointing, convert_torch
  refresh    ema_refresh, oasis_jax.evaluators.*
  loop       train, inference
  entry      evaluation, export, generate, evaluate, main, demo

A module of oasis_jax or data_pipelines that no layer lists is an error (put
it in its layer here). Imports inside functions of the project's own modules
are errors too, except the ones in LAZY_IMPORTS (each with its reason).
"""

import ast
import collections
import fnmatch
import os
import sys
from typing import Iterable, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ('oasis_jax', 'data_pipelines')

# Bottom first; patterns of module names (fnmatch).
LAYERS = (
    ('base', ('oasis_jax', 'oasis_jax.geometry', 'oasis_jax.weights',
              'oasis_jax.noise', 'oasis_jax.batching', 'oasis_jax.sharding',
              'oasis_jax.logging_utils', 'oasis_jax.host_memory',
              'oasis_jax.palette_data', 'data_pipelines.errors',
              'oasis_jax.compilation_cache', 'oasis_jax.cpu_workers',
              'oasis_jax.fatal', 'oasis_jax.config_compat',
              'oasis_jax.config_validation')),
    ('data', ('data_pipelines', 'data_pipelines.*')),
    ('config', ('oasis_jax.config_lib',)),
    ('kernels', ('oasis_jax.kernels', 'oasis_jax.kernels.*')),
    ('models', ('oasis_jax.models', 'oasis_jax.models.*')),
    ('pieces', ('oasis_jax.train_state', 'oasis_jax.losses',
                'oasis_jax.palettes', 'oasis_jax.input_pipeline',
                'oasis_jax.inception', 'oasis_jax.lpips', 'oasis_jax.fid',
                'oasis_jax.metrics', 'oasis_jax.vgg_weights',
                'oasis_jax.segmenters', 'oasis_jax.segmenters.*')),
    ('steps', ('oasis_jax.steps', 'oasis_jax.checkpointing',
               'oasis_jax.convert_torch')),
    ('refresh', ('oasis_jax.ema_refresh', 'oasis_jax.evaluators',
                 'oasis_jax.evaluators.*')),
    ('loop', ('oasis_jax.train', 'oasis_jax.inference')),
    ('entry', ('oasis_jax.evaluation', 'oasis_jax.export',
               'oasis_jax.generate', 'oasis_jax.evaluate', 'oasis_jax.main',
               'oasis_jax.demo')),
)

# (importer, imported) -> why the import is inside a function.
LAZY_IMPORTS = {
    ('data_pipelines', 'data_pipelines.tfds_builders'):
        'TFDS (and TensorFlow) load only for config.data.source=tfds',
}


def module_files(root: str = ROOT) -> dict[str, str]:
  """Module name -> file, for every .py file of the packages."""
  found = {}
  for package in PACKAGES:
    for dirpath, _, files in os.walk(os.path.join(root, package)):
      for name in files:
        if not name.endswith('.py'):
          continue
        rel = os.path.relpath(os.path.join(dirpath, name), root)
        parts = rel[:-3].split(os.sep)
        if parts[-1] == '__init__':
          parts = parts[:-1]
        found['.'.join(parts)] = os.path.join(dirpath, name)
  return found


def _resolve(name: str, modules: Iterable[str]) -> Optional[str]:
  """The project module `name` refers to (a module or its package)."""
  while name:
    if name in modules:
      return name
    name = name.rpartition('.')[0]
  return None


def imports_of(path: str, modules: set[str]) -> list[tuple[str, bool]]:
  """[(imported project module, inside a function)] of one file."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  found = []

  def visit(node, in_function: bool):
    for child in ast.iter_child_nodes(node):
      nested = in_function or isinstance(
          child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
      names = []
      if isinstance(child, ast.Import):
        names = [a.name for a in child.names]
      elif isinstance(child, ast.ImportFrom) and child.module and (
          not child.level):
        names = [f'{child.module}.{a.name}' for a in child.names]
      for name in names:
        target = _resolve(name, modules)
        if target is not None:
          found.append((target, in_function))
      visit(child, nested)

  visit(tree, False)
  return found


def layer_of(module: str) -> Optional[int]:
  for i, (_, patterns) in enumerate(LAYERS):
    if any(fnmatch.fnmatchcase(module, p) for p in patterns):
      return i
  return None


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The import cycles (each once, as a path that returns to its start)."""
  cycles, state, stack = [], {}, []

  def walk(node):
    state[node] = 'open'
    stack.append(node)
    for dep in sorted(graph.get(node, ())):
      if state.get(dep) == 'open':
        cycles.append(stack[stack.index(dep):] + [dep])
      elif dep not in state:
        walk(dep)
    stack.pop()
    state[node] = 'done'

  for node in sorted(graph):
    if node not in state:
      walk(node)
  return cycles


def check(root: str = ROOT) -> tuple[dict[str, set[str]], list[str]]:
  """(graph: module -> project modules it imports, violations)."""
  files = module_files(root)
  modules = set(files)
  graph = collections.defaultdict(set)
  problems = []
  for module in sorted(files):
    graph[module]  # pylint: disable=pointless-statement
    for target, in_function in imports_of(files[module], modules):
      if target == module:
        continue
      graph[module].add(target)
      if in_function and (module, target) not in LAZY_IMPORTS:
        problems.append(f'{files[module]}: imports {target} inside a '
                        'function (import it at the top).')
  for module in sorted(graph):
    layer = layer_of(module)
    if layer is None:
      problems.append(f'{module} ({files[module]}) is in no layer: add it to '
                      'LAYERS in tools/import_graph.py.')
      continue
    for target in sorted(graph[module]):
      target_layer = layer_of(target)
      if target_layer is not None and target_layer > layer:
        problems.append(
            f'{module} (layer {LAYERS[layer][0]}) imports {target} (layer '
            f'{LAYERS[target_layer][0]}, above it).')
  for cycle in _cycles(graph):
    problems.append('import cycle: ' + ' -> '.join(cycle))
  return dict(graph), problems


def format_graph(graph: dict[str, set[str]]) -> str:
  """One line per module, by layer: 'module -> its project imports'."""
  order = sorted(graph, key=lambda m: (layer_of(m) if layer_of(m) is not None
                                       else len(LAYERS), m))
  lines, current = [], None
  for module in order:
    layer = layer_of(module)
    name = LAYERS[layer][0] if layer is not None else '(no layer)'
    if name != current:
      lines.append(f'[{name}]')
      current = name
    deps = ', '.join(sorted(graph[module])) or '-'
    lines.append(f'  {module} -> {deps}')
  return '\n'.join(lines)


def main() -> int:
  graph, problems = check()
  print(format_graph(graph))
  for problem in problems:
    print(f'ERROR: {problem}', file=sys.stderr)
  return 1 if problems else 0


if __name__ == '__main__':
  sys.exit(main())
