"""PyTorch state dicts <-> Flax variables of the segmenters, by name.

The segmenters name their Flax children after the PyTorch modules, so a
variable's path joined by dots is its state-dict key, with the leaf renamed
(kernel/scale -> weight, mean/var -> running_mean/running_var) and conv
kernels transposed OIHW <-> HWIO. A file with a missing, extra or
wrongly-shaped key is rejected in one line that names the key.
"""

from typing import Any, Iterable, Mapping

from flax import traverse_util
import jax
import numpy as np

# (collection, Flax leaf) -> PyTorch leaf.
_LEAVES = {('params', 'kernel'): 'weight', ('params', 'scale'): 'weight',
           ('params', 'bias'): 'bias', ('batch_stats', 'mean'): 'running_mean',
           ('batch_stats', 'var'): 'running_var'}
# State-dict entries eval never reads: BN's counter and the buffers of
# CSAIL's SynchronizedBatchNorm2d (its multi-GPU training bookkeeping).
IGNORED_SUFFIXES = ('.num_batches_tracked', '._tmp_running_mean',
                    '._tmp_running_var', '._running_iter')
DATA_PARALLEL_PREFIX = 'module.'  # torch.nn.DataParallel checkpoints.


class SegmenterWeightsError(ValueError):
  """A segmenter weight file does not match the network."""


def torch_key(path: tuple[str, ...]) -> str:
  """('params', 'base', '0', '0', 'kernel') -> 'base.0.0.weight'."""
  collection, *names, leaf = path
  return '.'.join(names + [_LEAVES[(collection, leaf)]])


def _to_torch(value: np.ndarray) -> np.ndarray:
  return value.transpose(3, 2, 0, 1) if value.ndim == 4 else value


def _from_torch(value: np.ndarray) -> np.ndarray:
  return value.transpose(2, 3, 1, 0) if value.ndim == 4 else value


def strip_prefix(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
  """`state` without `prefix` when every key carries it, else as it is."""
  if state and all(k.startswith(prefix) for k in state):
    return {k[len(prefix):]: v for k, v in state.items()}
  return dict(state)


def prefixed(prefix: str, state: Mapping[str, Any]) -> dict[str, Any]:
  """`state` with `prefix` before every key."""
  return {prefix + k: v for k, v in state.items()}


def _relevant(state: Mapping[str, Any], fixed: Mapping[str, np.ndarray],
              what: str) -> dict[str, Any]:
  """The entries that are variables: ignored ones dropped, fixed checked."""
  out = {}
  for key, value in strip_prefix(state, DATA_PARALLEL_PREFIX).items():
    if key.endswith(IGNORED_SUFFIXES):
      continue
    if key in fixed:
      if not np.allclose(np.asarray(value, np.float32), fixed[key],
                         atol=1e-6):
        raise SegmenterWeightsError(
            f'{what}: {key!r} differs from the fixed value the network uses.')
      continue
    out[key] = value
  return out


def _check_keys(expected: Iterable[str], got: Iterable[str],
                what: str) -> None:
  expected, got = set(expected), set(got)
  for key in sorted(expected - got):
    raise SegmenterWeightsError(f'{what}: missing key {key!r}.')
  for key in sorted(got - expected):
    raise SegmenterWeightsError(f'{what}: unexpected key {key!r}.')


def state_dict_to_variables(state: Mapping[str, Any], abstract: Mapping,
                            *, fixed: Mapping[str, np.ndarray] = None,
                            what: str = 'segmenter weights') -> dict:
  """Flax variables ({'params', 'batch_stats'}) from a PyTorch state dict.

  Args:
    state: key -> array (a `module.` prefix on every key is removed).
    abstract: the network's variables or their shapes (`jax.eval_shape`).
    fixed: keys of constants the network builds itself (DRN's `up.weight`),
      accepted when they hold those values.
    what: the file, for messages.

  Raises:
    SegmenterWeightsError: a missing, unexpected or wrongly-shaped key.
  """
  paths = traverse_util.flatten_dict(abstract)
  by_key = {torch_key(p): p for p in paths}
  state = _relevant(state, fixed or {}, what)
  _check_keys(by_key, state, what)
  flat = {}
  for key, path in by_key.items():
    value = _from_torch(np.asarray(state[key], np.float32))
    if tuple(value.shape) != tuple(paths[path].shape):
      raise SegmenterWeightsError(
          f'{what}: {key!r} has shape {_to_torch(value).shape}, the network '
          f'needs {_to_torch(np.empty(paths[path].shape)).shape}.')
    flat[path] = value
  return traverse_util.unflatten_dict(flat)


def variables_to_state_dict(variables: Mapping, *,
                            fixed: Mapping[str, np.ndarray] = None
                            ) -> dict[str, np.ndarray]:
  """The PyTorch state dict (reference key names) of Flax variables."""
  flat = traverse_util.flatten_dict(jax.device_get(variables))
  out = {torch_key(p): _to_torch(np.asarray(v)) for p, v in flat.items()}
  out.update(fixed or {})
  return out


def abstract_variables(model: Any, size: int = 64) -> Any:
  """The shapes of a Flax network's variables, computing none of them."""
  x = jax.ShapeDtypeStruct((1, size, size, 3), np.float32)
  return jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
