"""Official OASIS PyTorch state_dicts <-> oasis-jax variables.

The official checkpoints (``*_G.pth``, ``*_D.pth``, ``*_EMA.pth``) are
``state_dict()``s: conv weights OIHW, spectral-norm layers as ``weight_orig``
with ``weight_u`` / ``weight_v``, BN running statistics under
``norm_k.first_norm``. They map to our NHWC/HWIO variables
``{'params': ..., 'batch_stats': ...}`` and back, exactly
(``num_batches_tracked``, which the official code never increments, is
dropped on import and written as 0 on export). Files are read by
``weight_files.read_state_dict``.

``python -m oasis_jax.convert_torch`` turns such files into an inference
checkpoint.
"""

import re
from typing import Any, Mapping

import flax
import numpy as np

from oasis_jax.pretrained import weight_files

_PARAM_LEAVES = {'weight': 'kernel', 'weight_orig': 'kernel', 'bias': 'bias'}
_STAT_LEAVES = {'weight_u': 'u', 'weight_v': 'v', 'running_mean': 'mean',
                'running_var': 'var'}
_SKIPPED = ('num_batches_tracked',)


class ConversionError(ValueError):
  """A state_dict that does not fit the model the config describes."""


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads an official state_dict from ``.pth`` (needs torch) or ``.npz``."""
  return weight_files.read_state_dict(
      path, what='an official OASIS state_dict', error=ConversionError)


def _module_path(torch_prefix: list[str]) -> list[str]:
  """Torch module names -> our module path (drops Sequential indices)."""
  out = []
  i = 0
  while i < len(torch_prefix):
    name = torch_prefix[i]
    nxt = torch_prefix[i + 1] if i + 1 < len(torch_prefix) else None
    if name in ('body', 'body_up', 'body_down') and nxt is not None:
      out.append(f'{name}_{nxt}')
      i += 2
      continue
    if name == 'first_norm':
      out.append('norm')
    elif not name.isdigit():
      out.append(name)
    i += 1
  return out


def torch_to_flax(state_dict: Mapping[str, np.ndarray],
                  dtype=np.float32) -> dict[str, Any]:
  """An official state_dict -> {'params': ..., 'batch_stats': ...}.

  Float arrays become ``dtype`` (float64 keeps a float64 state_dict exact).
  """
  variables: dict[str, Any] = {'params': {}, 'batch_stats': {}}
  for key, value in state_dict.items():
    parts = key.split('.')
    leaf = parts[-1]
    if leaf in _SKIPPED:
      continue
    path = _module_path(parts[:-1])
    value = np.asarray(value)
    if leaf in _PARAM_LEAVES:
      collection, name = 'params', _PARAM_LEAVES[leaf]
      if name == 'kernel':
        value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    elif leaf in _STAT_LEAVES:
      collection, name = 'batch_stats', _STAT_LEAVES[leaf]
    else:
      raise ConversionError(f'unexpected state_dict key {key!r}.')
    node = variables[collection]
    for p in path:
      node = node.setdefault(p, {})
    node[name] = value.astype(dtype)
  return variables


def _sequential_index(block: str, conv: str) -> str:
  """The nn.Sequential index the official D puts before a conv's keys."""
  if conv == 'conv2':
    return '1'
  if block.startswith('body_up'):
    return '2'
  return '0' if block == 'body_down_0' else '1'


def _torch_prefix(path: tuple[str, ...]) -> list[str]:
  out = []
  block = ''
  for name in path:
    m = re.fullmatch(r'(body|body_up|body_down)_(\d+)', name)
    if m:
      block = name
      out += [m.group(1), m.group(2)]
    elif name == 'norm':
      out.append('first_norm')
    elif name == 'mlp_shared':
      out += ['mlp_shared', '0']
    elif name in ('conv1', 'conv2'):
      out += [name, _sequential_index(block, name)]
    else:
      out.append(name)
  return out


# Official registration order of the modules and of the keys inside them.
_ORDER = ['conv_img', 'body_up', 'body_down', 'body', 'fc', 'layer_up_last',
          'conv_0', 'conv_1', 'conv1', 'conv2', 'conv_s', 'norm_0', 'norm_1',
          'norm_s', 'first_norm', 'mlp_shared', 'mlp_gamma', 'mlp_beta',
          'bias', 'weight_orig', 'weight', 'weight_u', 'weight_v',
          'running_mean', 'running_var', 'num_batches_tracked']


def _order_key(key: str):
  out = []
  for part in key.split('.'):
    if part.isdigit():
      out.append((1, int(part)))
    elif part in _ORDER:
      out.append((0, _ORDER.index(part)))
    else:
      out.append((2, part))
  # conv_img.weight before conv_img.bias, layer_up_last.weight before bias
  # and mlp weights before biases (plain nn.Conv2d registers weight first).
  if key.split('.')[-1] in ('weight', 'bias') and not any(
      f'.{c}.' in f'.{key}' for c in ('conv_0', 'conv_1', 'conv_s', 'conv1',
                                     'conv2')):
    out[-1] = (0, -1 if key.endswith('weight') else 0)
  return out


def flax_to_torch(variables: Mapping[str, Any], *,
                  with_num_batches_tracked: bool = True
                  ) -> dict[str, np.ndarray]:
  """Our variables -> an official state_dict (keys in the official order)."""
  params = flax.traverse_util.flatten_dict(
      flax.core.unfreeze(variables['params']))
  stats = flax.traverse_util.flatten_dict(
      flax.core.unfreeze(variables.get('batch_stats', {}) or {}))
  sn_layers = {path[:-1] for path in stats if path[-1] == 'u'}
  out = {}
  for path, value in params.items():
    prefix = _torch_prefix(path[:-1])
    value = np.asarray(value, np.float32)
    if path[-1] == 'kernel':
      leaf = 'weight_orig' if path[:-1] in sn_layers else 'weight'
      value = value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
    else:
      leaf = 'bias'
    out['.'.join(prefix + [leaf])] = value
  inverse = {v: k for k, v in _STAT_LEAVES.items()}
  for path, value in stats.items():
    prefix = _torch_prefix(path[:-1])
    out['.'.join(prefix + [inverse[path[-1]]])] = np.asarray(value,
                                                             np.float32)
    if path[-1] == 'var' and with_num_batches_tracked:
      out['.'.join(prefix + ['num_batches_tracked'])] = np.zeros((), np.int64)
  return {k: out[k] for k in sorted(out, key=_order_key)}


def check_against(variables: Mapping[str, Any], expected: Mapping[str, Any],
                  what: str) -> None:
  """Raises ConversionError unless the trees have the same paths and shapes."""
  got = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables))
  want = flax.traverse_util.flatten_dict(flax.core.unfreeze(expected))
  missing = sorted('/'.join(p) for p in set(want) - set(got))
  extra = sorted('/'.join(p) for p in set(got) - set(want))
  wrong = sorted(f"{'/'.join(p)}: {np.shape(got[p])} vs expected "
                 f'{tuple(want[p].shape)}'
                 for p in set(got) & set(want)
                 if tuple(np.shape(got[p])) != tuple(want[p].shape))
  if missing or extra or wrong:
    lines = [f'{what} does not fit the model of the config:']
    if missing:
      lines.append(f'  missing: {missing[:10]}')
    if extra:
      lines.append(f'  unexpected: {extra[:10]}')
    if wrong:
      lines.append(f'  shape mismatch: {wrong[:10]}')
    lines.append('  (check data.num_classes, generator.channels, z_dim, '
                 'spade_hidden, discriminator.channels, use_3d_noise, '
                 'norm, use_spectral_norm)')
    raise ConversionError('\n'.join(lines))


def convert_file(path: str, expected=None) -> dict[str, Any]:
  """Loads an official state_dict file as our variables, checked if given."""
  variables = torch_to_flax(load_state_dict(path))
  if expected is not None:
    check_against(variables, expected, path)
  return variables
