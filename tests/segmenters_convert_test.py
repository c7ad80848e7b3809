"""Tests of the segmenters' state-dict converters and weight loading."""

import functools
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np

from oasis_jax.pretrained import weight_files
from oasis_jax.evaluation.segmenters import convert
from oasis_jax.evaluation.segmenters import deeplab
from oasis_jax.evaluation.segmenters import drn
from oasis_jax.evaluation.segmenters import networks
from oasis_jax.evaluation.segmenters import upernet
import segmenter_fixtures

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_FIXTURES = {p.name: p for p in segmenter_fixtures.fixture_dirs()}
_NETWORKS = (drn.NAME, upernet.NAME, deeplab.NAME)
_FOLDER = {drn.NAME: 'drn_d_105', upernet.NAME: 'upernet101',
           deeplab.NAME: 'deeplabv2_msc'}


def _random_state(name: str, seed: int = 0) -> dict[str, np.ndarray]:
  """A state dict with the reference's key names (from the fixture's
  meta.json, skipped entries included) and random values (a fresh dict)."""
  return dict(_cached_random_state(name, seed))


@functools.cache
def _cached_random_state(name: str, seed: int) -> dict[str, np.ndarray]:
  meta = segmenter_fixtures.read_meta(_FIXTURES.get(
      _FOLDER[name], segmenter_fixtures.SHARED_DIR / _FOLDER[name]))
  rng = np.random.default_rng(seed)
  states = {}
  for entry in meta['tensors'] + meta['skipped']:
    shape = tuple(entry['shape'])
    value = rng.standard_normal(shape).astype(np.float32)
    if entry.get('dtype') == 'int64':
      value = np.zeros(shape, np.int64)
    states.setdefault(entry['file'], {})[entry['name']] = value
  if name == drn.NAME:
    states['model']['up.weight'] = drn.up_weight(meta['num_classes'])
  if name == upernet.NAME:
    return upernet.merge_state_dicts(states['encoder'], states['decoder'])
  return states['model']


def _rule_filled(name: str) -> set[str]:
  meta = segmenter_fixtures.read_meta(_FIXTURES.get(
      _FOLDER[name], segmenter_fixtures.SHARED_DIR / _FOLDER[name]))
  prefix = {'encoder': 'encoder.', 'decoder': 'decoder.', 'model': ''}
  return {prefix[e['file']] + e['name'] for e in meta['tensors']}


def _to_state(name: str, variables) -> dict:
  if name == upernet.NAME:
    return upernet.merge_state_dicts(*upernet.to_state_dicts(variables))
  module = drn if name == drn.NAME else deeplab
  return module.to_state_dict(variables)


class ConvertTest(parameterized.TestCase):

  @parameterized.parameters(*_NETWORKS)
  def test_round_trip_gives_the_same_arrays(self, name):
    state = _random_state(name)
    variables = networks.get(name).from_state_dict(state)
    back = _to_state(name, variables)
    filled = _rule_filled(name)
    self.assertContainsSubset(filled, set(back))
    for key in filled:
      np.testing.assert_array_equal(back[key], state[key], err_msg=key)

  @parameterized.parameters(*_NETWORKS)
  def test_conv_kernels_are_hwio(self, name):
    state = _random_state(name)
    variables = networks.get(name).from_state_dict(state)
    key, path = {
        drn.NAME: ('base.0.0.weight', ('base', '0', '0')),
        upernet.NAME: ('encoder.conv1.weight', ('encoder', 'conv1')),
        deeplab.NAME: ('base.layer1.conv1.conv.weight',
                       ('base', 'layer1', 'conv1', 'conv'))}[name]
    kernel = variables['params']
    for p in path:
      kernel = kernel[p]
    np.testing.assert_array_equal(kernel['kernel'],
                                  state[key].transpose(2, 3, 1, 0))

  @parameterized.parameters(*_NETWORKS)
  def test_missing_key_is_one_line_naming_it(self, name):
    state = _random_state(name)
    key = sorted(_rule_filled(name))[len(state) // 3]
    del state[key]
    with self.assertRaisesRegex(convert.SegmenterWeightsError,
                                f'^[^\n]*missing key {key!r}[^\n]*$'):
      networks.get(name).from_state_dict(state)

  @parameterized.parameters(*_NETWORKS)
  def test_extra_key_is_one_line_naming_it(self, name):
    state = _random_state(name)
    key = ('decoder.' if name == upernet.NAME else '') + 'aux.weight'
    state[key] = np.zeros((3,), np.float32)
    with self.assertRaisesRegex(convert.SegmenterWeightsError,
                                f'^[^\n]*unexpected key {key!r}[^\n]*$'):
      networks.get(name).from_state_dict(state)

  def test_wrong_shape_names_the_key(self):
    state = _random_state(deeplab.NAME)
    state['base.layer2.block1.reduce.conv.weight'] = np.zeros(
        (64, 64, 3, 3), np.float32)
    with self.assertRaisesRegex(convert.SegmenterWeightsError,
                                'reduce.conv.weight.*shape'):
      deeplab.from_state_dict(state)

  def test_data_parallel_prefix_and_fixed_up_weight(self):
    state = _random_state(drn.NAME)
    ours = drn.from_state_dict(state)
    wrapped = drn.from_state_dict({'module.' + k: v for k, v in state.items()})
    jax.tree_util.tree_map(np.testing.assert_array_equal, ours, wrapped)
    state['up.weight'] = state['up.weight'] * 2
    with self.assertRaisesRegex(convert.SegmenterWeightsError, 'up.weight'):
      drn.from_state_dict(state)

  def test_other_class_count_is_read_from_the_file(self):
    state = _random_state(deeplab.NAME)
    for i in range(4):
      state[f'base.aspp.c{i}.weight'] = state[f'base.aspp.c{i}.weight'][:7]
      state[f'base.aspp.c{i}.bias'] = state[f'base.aspp.c{i}.bias'][:7]
    self.assertEqual(deeplab.num_classes_of(state), 7)
    variables = deeplab.from_state_dict(state)
    self.assertEqual(
        variables['params']['base']['aspp']['c3']['kernel'].shape[-1], 7)


class LoadTest(absltest.TestCase):

  def test_csail_pair_of_npz_files_loads_without_torch(self):
    encoder, decoder = upernet.to_state_dicts(
        upernet.from_state_dict(_random_state(upernet.NAME, seed=3)))
    with tempfile.TemporaryDirectory() as tmp:
      paths = [os.path.join(tmp, f'{n}.npz') for n in ('enc', 'dec')]
      np.savez(paths[0], **encoder)
      np.savez(paths[1], **decoder)
      model, variables = networks.load(upernet.NAME, ','.join(paths))
      merged = os.path.join(tmp, 'upernet101.npz')
      networks.convert_file(upernet.NAME, ','.join(paths), merged)
      _, again = networks.load(upernet.NAME, merged)
    self.assertIsInstance(model, upernet.UPerNet)
    self.assertEqual(model.num_classes, 150)
    jax.tree_util.tree_map(np.testing.assert_array_equal, variables, again)

  def test_missing_file_is_one_line_naming_file_and_key(self):
    path = '/nonexistent/drn_d_105.npz'
    with self.assertRaisesRegex(
        networks.MissingSegmenterWeightsError,
        f'^{path}: no such file; set config.eval.segmenter_weights[^\n]*$'):
      networks.load(drn.NAME, path)

  def test_unknown_network(self):
    with self.assertRaisesRegex(ValueError, 'drn_d_105'):
      networks.get('pspnet')


if __name__ == '__main__':
  absltest.main()


class CommandLineTest(absltest.TestCase):

  def test_pth_to_npz_as_the_docs_show(self):
    import torch  # pylint: disable=g-import-not-at-top
    state = _random_state(drn.NAME, seed=5)
    with tempfile.TemporaryDirectory() as tmp:
      pth, npz = (os.path.join(tmp, f'drn_d_105.{e}') for e in ('pth', 'npz'))
      torch.save({k: torch.from_numpy(np.ascontiguousarray(v))
                  for k, v in state.items()}, pth)
      subprocess.run(
          [sys.executable, '-m', 'oasis_jax.evaluation.segmenters.networks',
           '--network=drn_d_105', f'--input={pth}', f'--output={npz}'],
          check=True, capture_output=True, env=dict(os.environ,
                                                    PYTHONPATH=_REPO))
      model, variables = networks.load(drn.NAME, npz)
      stored = weight_files.read_state_dict(npz)
      self.assertEqual(str(stored[weight_files.NPZ_SOURCE_SHA256]),
                       weight_files.sha256_file(pth))
    self.assertEqual(model.num_classes, 19)
    jax.tree_util.tree_map(np.testing.assert_array_equal, variables,
                           drn.from_state_dict(state))
