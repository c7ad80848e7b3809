"""Parity of the Flax segmenters with their reference PyTorch code.

Runs every fixture folder of ../shared/parity/segmenters/ and of
OASIS_SEGMENTER_FIXTURES (os.pathsep-separated): weights regenerated from
meta.json's rule, each array of outputs.npz within meta.json's tolerance, the
argmax equal wherever the reference's top-2 gap exceeds its tie band; and
a copy of a fixture with one array scaled by 1.01 fails.
"""

import functools
import os
import pathlib
import shutil
import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np

from oasis_jax.evaluation.segmenters import deeplab
from oasis_jax.evaluation.segmenters import drn
from oasis_jax.evaluation.segmenters import layers
from oasis_jax.evaluation.segmenters import networks
from oasis_jax.evaluation.segmenters import upernet
import segmenter_fixtures

_DIRS = segmenter_fixtures.fixture_dirs()


def _drn_outputs(model, variables, x):
  logits, feats = model.apply(variables, x, features=True)
  out = {'logits': logits, 'test_output': jax.nn.log_softmax(
      drn.upsample(logits), -1)}
  out.update({f'feat_layer{i}': f for i, f in enumerate(feats)})
  out['pred'] = jnp.argmax(out['test_output'], -1)
  return out


def _upernet_outputs(model, variables, x):
  logits, feats = model.apply(variables, x, features=True)
  test = jax.nn.softmax(layers.resize_bilinear(logits, *x.shape[1:3]), -1)
  out = {'logits': logits, 'test_output': test,
         'pred': jnp.argmax(test, -1)}
  out.update({f'feat_{k}': v for k, v in feats.items()})
  return out


def _deeplab_outputs(model, variables, x):
  out = model.apply(variables, x, outputs=True)
  out['pred'] = jnp.argmax(
      layers.resize_bilinear(out['test_output'], *x.shape[1:3]), -1)
  return out


_OUTPUTS = {drn.NAME: _drn_outputs, upernet.NAME: _upernet_outputs,
            deeplab.NAME: _deeplab_outputs}


@functools.cache
def _forward(network: str, num_classes: int):
  """One jitted forward per network and class count: NHWC arrays out."""
  model = networks.get(network).make(num_classes)
  return jax.jit(functools.partial(_OUTPUTS[network], model))


def _variables(meta: dict) -> dict:
  states = segmenter_fixtures.state_dicts(meta)
  if meta['network'] == upernet.NAME:
    return upernet.from_state_dicts(states['encoder'], states['decoder'])
  return networks.get(meta['network']).from_state_dict(states['model'])


@functools.cache
def _port_outputs(folder: str) -> dict[str, np.ndarray]:
  """The port's arrays for a fixture folder, NCHW like the reference's."""
  meta = segmenter_fixtures.read_meta(folder)
  x, _ = segmenter_fixtures.load_arrays(folder)
  with jax.default_matmul_precision('highest'):
    out = _forward(meta['network'], meta['num_classes'])(
        _variables(meta), jnp.asarray(x.transpose(0, 2, 3, 1)))
  return {k: np.asarray(v).transpose(0, 3, 1, 2) if v.ndim == 4
          else np.asarray(v) for k, v in out.items()}


def _reference_scores(meta: dict, ref: dict) -> np.ndarray:
  """argmax_ties.scores: the arrays the reference's pred is argmax of."""
  if meta['network'] != deeplab.NAME:
    return ref['test_output']
  h, w = ref['pred'].shape[1:]
  nhwc = jnp.asarray(ref['test_output'].transpose(0, 2, 3, 1))
  return np.asarray(layers.resize_bilinear(nhwc, h, w)).transpose(0, 3, 1, 2)


def failures(meta: dict, ref: dict, port: dict) -> list[str]:
  """What misses the fixture's tolerances (empty: parity)."""
  out = []
  for name, tol in meta['tolerances'].items():
    c = ref[name].shape[1]
    err = float(np.abs(port[name][:, :c] - ref[name]).max()
                / np.abs(ref[name]).max())
    if not err <= tol:
      out.append(f'{name}: relative error {err:.3g} > {tol}')
  scores = np.sort(_reference_scores(meta, ref), axis=1)
  decisive = scores[:, -1] - scores[:, -2] >= meta['argmax_ties']['tie_eps']
  wrong = int(((port['pred'] != ref['pred']) & decisive).sum())
  if wrong:
    out.append(f'pred: {wrong} decisive pixels differ')
  return out


def _check_folder(folder) -> list[str]:
  meta = segmenter_fixtures.read_meta(folder)
  _, ref = segmenter_fixtures.load_arrays(folder)
  return failures(meta, ref, _port_outputs(str(folder)))


def _params(dirs):
  """One case per folder; without any, one case that skips (a clone
  without ../shared/) or fails (segmenter_fixtures.read_meta)."""
  if not dirs:
    return [dict(testcase_name='no_fixture',
                 folder=str(segmenter_fixtures.SHARED_DIR / 'absent'))]
  return [dict(testcase_name=p.name, folder=str(p)) for p in dirs]


class FixturesPresentTest(absltest.TestCase):

  def test_shared_fixtures_found(self):
    segmenter_fixtures.skip_without_shared()
    names = {p.name for p in _DIRS}
    self.assertContainsSubset({'drn_d_105', 'upernet101', 'deeplabv2_msc'},
                              names)

  def test_env_var_adds_folders(self):
    extra = ['/tmp/fixture_a', '/tmp/fixture_b']
    with mock.patch.dict(os.environ, {segmenter_fixtures.ENV_VAR:
                                      os.pathsep.join(extra)}):
      dirs = segmenter_fixtures.fixture_dirs()
    self.assertEqual([str(p) for p in dirs[-2:]], extra)


class SegmenterParityTest(parameterized.TestCase):

  @parameterized.named_parameters(_params(_DIRS))
  def test_weight_rule_reproduces_the_digest(self, folder):
    meta = segmenter_fixtures.read_meta(folder)
    states = segmenter_fixtures.state_dicts(meta)
    self.assertEqual(segmenter_fixtures.weights_sha256(meta, states),
                     meta['weights_sha256'])

  @parameterized.named_parameters(_params(_DIRS))
  def test_every_array_within_tolerance(self, folder):
    meta = segmenter_fixtures.read_meta(folder)
    _, ref = segmenter_fixtures.load_arrays(folder)
    self.assertEqual(set(meta['tolerances']) | {'pred'}, set(ref))
    self.assertEqual(_check_folder(folder), [])

  @parameterized.named_parameters(_params(_DIRS))
  def test_every_array_scaled_by_1_01_fails(self, folder):
    meta = segmenter_fixtures.read_meta(folder)
    _, ref = segmenter_fixtures.load_arrays(folder)
    port = _port_outputs(folder)
    for name in meta['tolerances']:
      with self.subTest(name):
        bad = failures(meta, {**ref, name: ref[name] * 1.01}, port)
        self.assertNotEmpty(bad)
        self.assertStartsWith(bad[0], name)

  @parameterized.named_parameters(_params(_DIRS))
  def test_perturbed_copy_of_the_folder_fails(self, folder):
    segmenter_fixtures.read_meta(folder)  # Skips in a clone without it.
    with tempfile.TemporaryDirectory() as tmp:
      copy = pathlib.Path(tmp) / pathlib.Path(folder).name
      shutil.copytree(folder, copy)
      (copy / 'outputs.npz').chmod(0o644)
      _, ref = segmenter_fixtures.load_arrays(copy)
      ref['test_output'] = ref['test_output'] * np.float32(1.01)
      np.savez(copy / 'outputs.npz', **ref)
      self.assertIn('test_output', ' '.join(_check_folder(copy)))


if __name__ == '__main__':
  absltest.main()
