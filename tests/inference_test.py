"""Tests of inference/synthesis.py: seeds, batching, local edits,
interpolation, inference checkpoints and the official-weights route (parity
fixtures)."""

import functools
import json
import pathlib

from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default as default_lib
from configs import tiny64 as tiny64_lib
from oasis_jax.inference import export_format
from oasis_jax import convert_torch
from oasis_jax.pretrained import oasis as oasis_weights
from oasis_jax.inference import synthesis
from oasis_jax.training import steps

_PARITY = (pathlib.Path(__file__).resolve().parents[1] / '..' / 'shared' /
           'parity' / 'tiny_square')
_OBJECT = 2  # The class of the square object of every test label map.


tiny_config = tiny64_lib.get_config


def make_labels() -> np.ndarray:
  """[3, 64, 64]: ground (1) under sky (3), a square object (2) in each."""
  label = np.full((3, 64, 64), 3, np.int32)
  label[:, 40:] = 1
  for i, (y, x) in enumerate([(8, 8), (20, 36), (30, 14)]):
    label[i, y:y + 16, x:x + 16] = _OBJECT
  label[2, :4] = 0
  return label



@functools.lru_cache(maxsize=None)
def _variables():
  """An untrained generator with BN statistics of its own activations.

  Kernels at 3x the Xavier scale: images with a standard deviation of about
  0.6, like real ones (the official 0.02 init gives almost flat images).
  """
  config = tiny_config()
  variables = synthesis.random_variables(config, seed=0, gain=3.0)
  refresh = jax.jit(functools.partial(steps.refresh_stats_step,
                                      config=config))
  labels = jnp.asarray(make_labels())
  for i in range(10):
    variables = refresh(variables, labels, jax.random.PRNGKey(i))
  return jax.tree.map(np.asarray, variables)


class SynthesizerTest(parameterized.TestCase):
  """One untrained tiny generator, compiled once for the whole class."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.synth = synthesis.Synthesizer(tiny_config(), _variables(),
                                      source='test')

  def test_same_seed_same_images_and_different_seed_different(self):
    label = make_labels()
    a = self.synth.generate(label, seed=0)
    b = self.synth.generate(label, seed=0)
    c = self.synth.generate(label, seed=1)
    assert a.shape == (3, 64, 64, 3) and a.dtype == np.float32
    assert np.abs(a).max() <= 1.0
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 0.05, np.abs(a - c).mean()
    # A Synthesizer loaded again gives the same images for the same seed.
    again = synthesis.Synthesizer(tiny_config(), _variables())
    np.testing.assert_array_equal(again.generate(label, seed=0), a)

  def test_batches_longer_than_a_call_match_single_images(self):
    """Chunking, padding and sharding over the devices change nothing."""
    n = self.synth.batch_size + 3
    label = np.concatenate([make_labels()] * (n // 3 + 1))[:n]
    z = self.synth.noise(3, n)
    out = self.synth.generate(label, z=z)
    assert out.shape == (n, 64, 64, 3)
    for i in (0, self.synth.batch_size - 1, n - 1):
      single = self.synth.generate(label[i], z=z[i])[0]
      np.testing.assert_allclose(out[i], single, atol=1e-6)

  def test_per_pixel_noise_equal_to_the_vector_gives_the_same_image(self):
    label = make_labels()
    z = self.synth.noise(0, 3)
    z3d = np.broadcast_to(z[:, None, None], (3, 64, 64, 4))
    # (The two take different code paths: equal up to float rounding.)
    np.testing.assert_allclose(self.synth.generate(label, z=z3d),
                               self.synth.generate(label, z=z), atol=1e-4)
    np.testing.assert_array_equal(self.synth.generate(label, z=z),
                                  self.synth.generate(label, seed=0))

  def test_sample_gives_num_samples_per_label_map(self):
    label = make_labels()[:2]
    out = self.synth.sample(label, 3, seed=5)
    assert out.shape == (2, 3, 64, 64, 3)
    z = self.synth.noise(5, 3)
    single = self.synth.generate(label[1], z=z[2])[0]
    np.testing.assert_allclose(out[1, 2], single, atol=1e-6)
    assert np.abs(out[0, 0] - out[0, 1]).mean() > 0.05
    streams = self.synth.sample(label, 3, seed=5, streams=[0, 9])
    np.testing.assert_array_equal(streams[0], out[0])
    assert not np.allclose(streams[1], out[1])

  def test_resample_region_changes_inside_far_more_than_outside(self):
    label = make_labels()
    z = self.synth.noise(0, 3)
    base = self.synth.generate(label, z=z)
    edited, z_edit = self.synth.resample_region(label, z, {_OBJECT}, seed=11)
    mask = label == _OBJECT
    # The noise: new inside, the old vector everywhere else.
    np.testing.assert_array_equal(
        z_edit[~mask], np.broadcast_to(z[:, None, None], z_edit.shape)[~mask])
    assert np.all(np.abs(z_edit[mask] - np.broadcast_to(
        z[:, None, None], z_edit.shape)[mask]) > 0)
    change = np.abs(edited - base).mean(-1)
    ratios = [change[i][mask[i]].mean() / change[i][~mask[i]].mean()
              for i in range(3)]
    pooled = change[mask].mean() / change[~mask].mean()
    # An untrained generator: its low-resolution layers spread some of the
    # change over the whole image (a trained one learns to keep it local).
    print(f'inside/outside mean |change|: {pooled:.1f} (per image '
          f'{", ".join(f"{r:.1f}" for r in ratios)})')
    assert pooled > 4 and min(ratios) > 3, (pooled, ratios)
    # The same region given as a boolean mask, and as a bare class id.
    by_mask, _ = self.synth.resample_region(label, z, mask, seed=11)
    by_id, _ = self.synth.resample_region(label, z, _OBJECT, seed=11)
    np.testing.assert_array_equal(by_mask, edited)
    np.testing.assert_array_equal(by_id, edited)
    # Edits chain: re-editing an empty region keeps the edited image.
    empty = np.zeros((64, 64), bool)
    again, _ = self.synth.resample_region(label, z_edit, empty, seed=12)
    np.testing.assert_allclose(again, edited, atol=1e-6)

  def test_interpolate_runs_from_z0_to_z1(self):
    label = make_labels()[0]
    z0, z1 = self.synth.noise(4, 2)
    frames = self.synth.interpolate(label, z0, z1, num_steps=5)
    assert frames.shape == (5, 64, 64, 3)
    np.testing.assert_allclose(frames[0], self.synth.generate(label, z=z0)[0],
                               atol=1e-5)
    np.testing.assert_allclose(frames[-1], self.synth.generate(label, z=z1)[0],
                               atol=1e-5)
    steps_ = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))
    assert np.all(steps_ > 0)

  def test_bad_label_maps_are_clear_errors(self):
    label = make_labels()[0].copy()
    label[0, 0] = 6
    with pytest.raises(ValueError,
                       match=r'class ids \[6\] are outside \[0, 6\)'):
      self.synth.generate(label)
    with pytest.raises(ValueError, match='integers'):
      self.synth.generate(label.astype(np.float32))
    with pytest.raises(ValueError, match='does not fit the generator'):
      self.synth.generate(np.zeros((64, 60), np.int32))
    with pytest.raises(ValueError, match='z must be'):
      self.synth.generate(make_labels(), z=np.zeros((2, 4)))
    with pytest.raises(ValueError, match='region'):
      self.synth.resample_region(make_labels(), self.synth.noise(0, 3), 'sky')

  def test_inference_checkpoint_round_trip(self):
    path = export_format.save_inference(
        self.create_tempdir().full_path + '/ckpt', tiny_config(),
        _variables(), source='unit test')
    loaded = synthesis.Synthesizer.load(path)
    assert loaded.num_classes == 6 and loaded.z_dim == 4
    assert 'unit test' in loaded.source
    np.testing.assert_array_equal(loaded.generate(make_labels(), seed=2),
                                  self.synth.generate(make_labels(), seed=2))

  def test_variables_of_another_model_are_rejected(self):
    config = tiny_config()
    config.data.num_classes = 7
    with pytest.raises(oasis_weights.ConversionError, match='shape mismatch'):
      synthesis.Synthesizer(config, _variables())


def _config_from_meta(meta):
  """The generator's config of a parity fixture (tests/parity_test.py)."""
  c = default_lib.get_config()
  c.data.num_classes = meta['semantic_nc']
  c.data.image_size = meta['crop_size']
  c.data.aspect_ratio = meta['aspect_ratio']
  g = c.generator
  g.channels, g.z_dim = meta['channels_G'], meta['z_dim']
  g.num_res_blocks = meta['num_res_blocks']
  g.spade_hidden = meta['spade_hidden']
  g.use_3d_noise = meta['use_3d_noise']
  g.use_spectral_norm = meta['use_spectral_norm']
  g.norm = 'instance' if meta['param_free_norm'] == 'instance' else 'batch'
  c.discriminator.channels = tuple(meta['d_channels'][1:])
  c.discriminator.last_channels = meta['d_last_channels']
  return c


@pytest.mark.skipif(not _PARITY.is_dir(),
                    reason=f'parity fixture {_PARITY} is absent')
class OfficialWeightsTest(parameterized.TestCase):
  """The official-weights route reproduces the official eval-mode outputs."""

  @parameterized.product(net=['G', 'EMA'], ext=['pth', 'npz'])
  def test_official_weights_give_the_fixture_eval_outputs(self, net, ext):
    if ext == 'pth':
      pytest.importorskip('torch', reason='torch is not installed')
    meta = json.loads((_PARITY / 'meta.json').read_text())
    config = _config_from_meta(meta)
    with np.load(_PARITY / 'inputs.npz') as f:
      label, z = f['label_int'][:, 0].astype(np.int32), f['z']
    with np.load(_PARITY / 'train_step.npz') as f:
      want = f[f'{net}_eval_after_step'].transpose(0, 2, 3, 1)
    weights = str(_PARITY / f'{net}_step.{ext}')
    kwargs = {'ema': weights} if net == 'EMA' else {'generator': weights}
    synth = synthesis.Synthesizer.from_official(config, **kwargs)
    got = synth.generate(label, z=z)
    err = np.abs(got - want).max()
    assert err <= 1e-5 * np.abs(want).max(), err

  def test_converted_checkpoint_equals_the_official_route(self):
    meta = json.loads((_PARITY / 'meta.json').read_text())
    config = _config_from_meta(meta)
    with np.load(_PARITY / 'inputs.npz') as f:
      label, z = f['label_int'][:, 0].astype(np.int32), f['z']
    converted = convert_torch.convert_official(
        config, str(_PARITY / 'G_step.npz'), ema=str(_PARITY / 'EMA_step.npz'))
    path = export_format.save_inference(
        self.create_tempdir().full_path + '/ckpt', config, converted['ema'])
    direct = synthesis.Synthesizer.from_official(
        config, ema=str(_PARITY / 'EMA_step.npz'))
    np.testing.assert_array_equal(
        synthesis.Synthesizer.from_checkpoint(path).generate(label, z=z),
        direct.generate(label, z=z))
