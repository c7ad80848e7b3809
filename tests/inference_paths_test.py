"""Tests of the eval-mode fast paths: Winograd conv, fused SPADE, SN conv."""

from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import flax
import jax
import jax.numpy as jnp
import numpy as np

from oasis_jax.models import layers
from oasis_jax.models import spade

_SAME = ((1, 1), (1, 1))

# Shared across tests: one trace per shape / band height / epilogue.
_winograd = jax.jit(layers.winograd_conv3x3,
                    static_argnames=('band_rows', 'epilogue'))
_xla_conv = jax.jit(lambda x, k: layers._xla_conv(x, k, _SAME))


def _assert_close(got, want, rtol=1e-5):
  """Elementwise, to rtol of the largest reference value."""
  want = np.asarray(want)
  np.testing.assert_allclose(got, want, rtol=rtol,
                             atol=rtol * float(np.abs(want).max()))


def _normal(seed, shape):
  return jax.random.normal(jax.random.PRNGKey(seed), shape)


def _force_winograd():
  """Patches the Winograd thresholds so any 3x3 conv map qualifies."""
  return mock.patch.multiple(layers, _WINOGRAD_MIN_PIXELS=1,
                             _WINOGRAD_MIN_FEATURES=1)


class WinogradConvTest(parameterized.TestCase):
  """winograd_conv3x3 equals XLA's 'same' convolution."""

  @parameterized.named_parameters(
      ('one_band', (1, 8, 8, 3), 5, 8),
      ('h_not_multiple_of_band', (1, 11, 8, 3), 5, 8),
      ('w_not_multiple_of_tile', (1, 6, 7, 3), 5, 3),
      ('batch_two_uneven', (2, 7, 10, 4), 6, 3),
      ('one_row_bands', (2, 5, 5, 2), 3, 1),
      ('one_pixel', (1, 1, 1, 3), 4, 8),
      ('one_pixel_batch_two', (2, 1, 1, 3), 4, 1),
      ('one_column', (1, 9, 1, 2), 3, 3))
  def test_matches_xla_conv(self, shape, features, band_rows):
    x = _normal(0, shape)
    k = _normal(1, (3, 3, shape[-1], features))
    got = _winograd(x, k, band_rows=band_rows)
    self.assertEqual(got.shape, shape[:3] + (features,))
    _assert_close(got, _xla_conv(x, k))

  def test_gradients_match_xla_conv(self):
    x = _normal(0, (2, 7, 6, 3))
    k = _normal(1, (3, 3, 3, 4))
    g = _normal(2, (2, 7, 6, 4))
    grads = {}
    for name, f in (('winograd', lambda x, k: layers.winograd_conv3x3(
        x, k, band_rows=3)), ('xla', lambda x, k: layers._xla_conv(
            x, k, _SAME))):
      loss = lambda x, k, f=f: jnp.sum(f(x, k) * g)
      grads[name] = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, k)
    for got, want in zip(grads['winograd'], grads['xla']):
      _assert_close(got, want, rtol=2e-5)

  def test_non_3x3_kernel_is_an_error(self):
    with self.assertRaisesRegex(ValueError, '3x3'):
      layers.winograd_conv3x3(jnp.ones((1, 4, 4, 2)), jnp.ones((5, 5, 2, 2)))
    with self.assertRaisesRegex(ValueError, '3x3'):
      layers.winograd_conv3x3(jnp.ones((1, 4, 4, 2)), jnp.ones((1, 1, 2, 2)))

  @parameterized.parameters(2, 8)
  def test_epilogue_equals_unfused_computation(self, band_rows):
    x = _normal(0, (2, 5, 7, 3))
    k = _normal(1, (3, 3, 3, 4))
    a = _normal(2, (2, 5, 7, 2))
    epilogue = _scale_by_first_channel_plus_one
    got = _winograd(x, k, band_rows=band_rows, epilogue=epilogue,
                    operands=(a,))
    want = _xla_conv(x, k) * a[..., :1] + 1
    _assert_close(got, want)

  def test_epilogue_with_two_operands_can_change_channels(self):
    x = _normal(0, (1, 6, 5, 2))
    k = _normal(1, (3, 3, 2, 4))
    a, b = _normal(2, (1, 6, 5, 4)), _normal(3, (1, 6, 5, 3))
    got = _winograd(x, k, band_rows=4, epilogue=_mix, operands=(a, b))
    want = _mix(_xla_conv(x, k), a, b)
    self.assertEqual(got.shape, (1, 6, 5, 3))
    _assert_close(got, want)


def _scale_by_first_channel_plus_one(y, a):
  return y * a[..., :1] + 1


def _mix(y, a, b):
  return (y * a)[..., :3] - b


class LabelConvRowsTest(parameterized.TestCase):
  """label_conv_rows gathers the band of activation(LabelConv(label))."""

  @parameterized.product(z_dim=[0, 3], band_rows=[1, 3, 8])
  def test_winograd_of_band_source_equals_conv_of_activation(
      self, z_dim, band_rows):
    label = jax.random.randint(jax.random.PRNGKey(0), (2, 5, 7), 0, 6)
    z = _normal(1, (2, z_dim)) if z_dim else None
    lc = layers.LabelConv(4, 6, z_dim, mode='gather')
    v = lc.init(jax.random.PRNGKey(2), label, z)
    v = jax.tree.map(lambda p: p + 0.1, v)  # Non-zero bias.
    k = _normal(3, (3, 3, 4, 5))
    tables, bias = lc.apply(v, label, z, tables_only=True)
    self.assertEqual(tables.shape, (2 if z_dim else 1, 9, 7, 4))
    np.testing.assert_array_equal(bias, v['params']['bias'])
    source = layers.label_conv_rows(tables, bias, label, jax.nn.relu)
    self.assertEqual(source.shape, (2, 5, 7, 4))
    got = layers.winograd_conv3x3(source, k, band_rows=band_rows)
    actv = jax.nn.relu(lc.apply(v, label, z))
    self.assertGreater(float(jnp.min(actv)), -1e-9)
    self.assertGreater(float(jnp.mean(actv > 0)), 0.2)  # Not all clipped.
    _assert_close(got, _xla_conv(actv, k))
    _assert_close(got, _winograd(actv, k, band_rows=band_rows))

  def test_band_source_with_epilogue(self):
    label = jax.random.randint(jax.random.PRNGKey(0), (1, 6, 5), 0, 4)
    lc = layers.LabelConv(3, 4, 0, mode='gather')
    v = jax.tree.map(lambda p: p + 0.1,
                     lc.init(jax.random.PRNGKey(1), label, None))
    k = _normal(2, (3, 3, 3, 2))
    a = _normal(3, (1, 6, 5, 2))
    tables, bias = lc.apply(v, label, None, tables_only=True)
    got = layers.winograd_conv3x3(
        layers.label_conv_rows(tables, bias, label, jax.nn.relu), k,
        band_rows=4, epilogue=_scale_by_first_channel_plus_one, operands=(a,))
    actv = jax.nn.relu(lc.apply(v, label, None))
    _assert_close(got, _xla_conv(actv, k) * a[..., :1] + 1)

  def test_tables_only_needs_gather_mode(self):
    label = jnp.zeros((1, 4, 4), jnp.int32)
    lc = layers.LabelConv(3, 4, 0, mode='dense')
    v = lc.init(jax.random.PRNGKey(0), label, None)
    with self.assertRaisesRegex(ValueError, 'tables_only'):
      lc.apply(v, label, None, tables_only=True)

  def test_tables_only_rejects_per_pixel_z(self):
    label = jnp.zeros((1, 4, 4), jnp.int32)
    z = jnp.ones((1, 4, 4, 2))
    lc = layers.LabelConv(3, 4, 2, mode='gather')
    v = lc.init(jax.random.PRNGKey(0), label, z)
    with self.assertRaisesRegex(ValueError, 'tables_only'):
      lc.apply(v, label, z, tables_only=True)


class UsesWinogradTest(parameterized.TestCase):

  def test_large_float32_cpu_conv_qualifies(self):
    self.assertTrue(layers.uses_winograd((1, 32, 32, 128), 128, jnp.float32,
                                         'cpu'))

  @parameterized.named_parameters(
      ('bfloat16', (1, 32, 32, 128), 128, jnp.bfloat16, 'cpu'),
      ('few_features', (1, 32, 32, 128), 64, jnp.float32, 'cpu'),
      ('small_map', (1, 16, 16, 128), 128, jnp.float32, 'cpu'),
      ('xla_impl', (1, 32, 32, 128), 128, jnp.float32, 'xla'))
  def test_does_not_qualify(self, shape, features, dtype, impl):
    self.assertFalse(layers.uses_winograd(shape, features, dtype, impl))

  def test_thresholds_are_read_at_call_time(self):
    with _force_winograd():
      self.assertTrue(layers.uses_winograd((1, 2, 2, 1), 1, jnp.float32,
                                           'cpu'))

  def test_inference_conv2d_takes_winograd_and_matches_xla(self):
    x = _normal(0, (1, 32, 32, 8))
    k = _normal(1, (3, 3, 8, 128)) * 0.1
    with mock.patch.object(layers, 'winograd_conv3x3',
                           wraps=layers.winograd_conv3x3) as spy:
      got = layers.conv2d(x, k, 'cpu', inference=True)
      self.assertEqual(spy.call_count, 1)
      # Not in training (differentiated) forwards, nor with XLA.
      layers.conv2d(x, k, 'cpu')
      layers.conv2d(x, k, 'xla', inference=True)
      self.assertEqual(spy.call_count, 1)
    _assert_close(got, layers.conv2d(x, k, 'xla'))

  def test_inference_conv2d_skips_winograd_for_1x1(self):
    x = _normal(0, (1, 4, 4, 2))
    k = _normal(1, (1, 1, 2, 3))
    with _force_winograd(), mock.patch.object(
        layers, 'winograd_conv3x3', wraps=layers.winograd_conv3x3) as spy:
      got = layers.conv2d(x, k, 'cpu', inference=True)
    spy.assert_not_called()
    _assert_close(got, layers.conv2d(x, k, 'xla'))

  @parameterized.named_parameters(
      # Wide input, 512 pixels in the batch, few outputs: XLA's conv when
      # only a forward is needed, the im2col matmul in training.
      ('fwd_mid_batch', (2, 16, 16, 512), 8, True, False),
      ('train_mid_batch', (2, 16, 16, 512), 8, False, True),
      ('fwd_small_batch', (1, 16, 16, 512), 8, True, True),
      ('fwd_wide_output', (2, 16, 16, 512), 1024, True, True))
  def test_wide_input_im2col_choice(self, shape, features, inference,
                                    im2col):
    x = _normal(0, shape)
    k = _normal(1, (3, 3, shape[-1], features)) * 0.05
    with mock.patch.object(layers, '_im2col_conv',
                           wraps=layers._im2col_conv) as spy:
      got = layers.conv2d(x, k, 'cpu', inference=inference)
    self.assertEqual(spy.called, im2col)
    _assert_close(got, _xla_conv(x, k))


class Conv2dWithRowTest(parameterized.TestCase):
  """conv2d_with_row = (conv2d, row @ kernel), the row inside the matmul
  where the conv is one."""

  @parameterized.named_parameters(
      ('small_map_im2col', (2, 4, 3, 5), 3, 'cpu', True),
      ('one_by_one', (2, 5, 4, 6), 1, 'cpu', False),
      ('mid_map_xla_conv', (1, 20, 20, 3), 3, 'cpu', False),
      ('xla_impl', (2, 4, 3, 5), 3, 'xla', False))
  def test_matches_conv_and_matrix_product(self, shape, k, impl, in_matmul):
    x = _normal(0, shape)
    kernel = _normal(1, (k, k, shape[-1], 7))
    row = _normal(2, (k * k * shape[-1],))
    with mock.patch.object(layers, '_im2col_conv_forward',
                           wraps=layers._im2col_conv_forward) as spy:
      y, product = layers.conv2d_with_row(x, kernel, row, impl)
    self.assertEqual(
        any(c.args[3:] and c.args[3] is not None for c in spy.call_args_list),
        in_matmul)
    _assert_close(y, layers.conv2d(x, kernel, 'xla'))
    want = np.asarray(row, np.float64) @ np.asarray(
        kernel, np.float64).reshape(-1, 7)
    np.testing.assert_allclose(product, want, rtol=1e-5,
                               atol=1e-5 * np.abs(want).max())

  def test_winograd_conv_keeps_its_path(self):
    x = _normal(0, (1, 8, 8, 4))
    kernel = _normal(1, (3, 3, 4, 4))
    row = _normal(2, (36,))
    with _force_winograd(), mock.patch.object(
        layers, 'winograd_conv3x3', wraps=layers.winograd_conv3x3) as spy:
      y, product = layers.conv2d_with_row(x, kernel, row, 'cpu')
    spy.assert_called_once()
    _assert_close(y, layers.conv2d(x, kernel, 'xla'))
    _assert_close(product, row @ kernel.reshape(-1, 4))


def _w_mat(kernel):
  """[out, in*kh*kw] in PyTorch's OIHW order."""
  kernel = np.asarray(kernel, np.float64)
  return kernel.transpose(3, 2, 0, 1).reshape(kernel.shape[-1], -1)


def _np_normalize(x):
  return x / max(np.linalg.norm(x), 1e-12)


# (name, x shape, features) on both sides of Conv's divide_output rule.
_DIVIDE_OUTPUT_CASES = (('output_smaller_than_kernel', (1, 2, 2, 64), 32),
                        ('output_larger_than_kernel', (2, 8, 8, 3), 4))


class SpectralNormConvTest(parameterized.TestCase):
  """Conv(spectral_norm=True) by hand, on both sides of divide_output."""

  def _setup(self, x_shape, features):
    x = _normal(0, x_shape)
    conv = layers.Conv(features, 3, spectral_norm=True)
    v = conv.init(jax.random.PRNGKey(1), x, train=False)
    # A non-zero bias; vectors away from the top singular pair, but with
    # u . W v well away from zero.
    params = {'kernel': v['params']['kernel'],
              'bias': _normal(2, (features,)) * 0.1}
    vv = _np_normalize(np.asarray(_normal(3, (9 * x_shape[-1],)),
                                  np.float64))
    u = (_np_normalize(_w_mat(params['kernel']) @ vv)
         + 0.5 * _np_normalize(np.asarray(_normal(4, (features,)))))
    stats = {'u': jnp.asarray(_np_normalize(u), jnp.float32),
             'v': jnp.asarray(vv, jnp.float32)}
    return conv, x, {'params': params, 'batch_stats': stats}

  @parameterized.named_parameters(*_DIVIDE_OUTPUT_CASES)
  def test_eval_equals_conv_with_normalized_kernel(self, x_shape, features):
    conv, x, v = self._setup(x_shape, features)
    kernel = v['params']['kernel']
    u, vv = (np.asarray(v['batch_stats'][n], np.float64) for n in 'uv')
    sigma = float(u @ _w_mat(kernel) @ vv)
    self.assertGreater(sigma, 1e-3)
    want = (layers._xla_conv(x, kernel / sigma, _SAME)
            + v['params']['bias'])
    y, mutated = conv.apply(v, x, train=False, mutable=['batch_stats'])
    _assert_close(y, want, rtol=2e-5)
    for n in 'uv':  # Eval does not iterate.
      np.testing.assert_array_equal(mutated['batch_stats'][n],
                                    v['batch_stats'][n])
    # params_only: the kernel the forward uses, and the bias.
    k_sn, bias = conv.apply(v, x, train=False, params_only=True)
    _assert_close(k_sn, kernel / sigma, rtol=2e-6)
    np.testing.assert_array_equal(bias, v['params']['bias'])

  @parameterized.named_parameters(*_DIVIDE_OUTPUT_CASES)
  def test_train_is_one_power_iteration(self, x_shape, features):
    conv, x, v = self._setup(x_shape, features)
    kernel = v['params']['kernel']
    w = _w_mat(kernel)
    u0 = np.asarray(v['batch_stats']['u'], np.float64)
    v1 = _np_normalize(w.T @ u0)
    u1 = _np_normalize(w @ v1)
    y, mutated = conv.apply(v, x, train=True, mutable=['batch_stats'])
    np.testing.assert_allclose(mutated['batch_stats']['v'], v1, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(mutated['batch_stats']['u'], u1, rtol=1e-5,
                               atol=1e-6)
    # The forward uses the new vectors' sigma.
    sigma = float(u1 @ w @ v1)
    want = (layers._xla_conv(x, kernel / sigma, _SAME)
            + v['params']['bias'])
    _assert_close(y, want, rtol=2e-5)

  def test_params_only_without_bias(self):
    x = _normal(0, (1, 3, 3, 2))
    conv = layers.Conv(5, 1, use_bias=False, spectral_norm=True)
    v = conv.init(jax.random.PRNGKey(1), x, train=False)
    k_sn, bias = conv.apply(v, x, train=False, params_only=True)
    self.assertIsNone(bias)
    u, vv = (np.asarray(v['batch_stats'][n], np.float64) for n in 'uv')
    sigma = float(u @ _w_mat(v['params']['kernel']) @ vv)
    _assert_close(k_sn, v['params']['kernel'] / sigma, rtol=2e-6)


class ParamFreeNormStatsTest(parameterized.TestCase):

  @parameterized.parameters('batch', 'instance')
  def test_stats_only_reproduces_normal_output(self, kind):
    x = _normal(0, (2, 3, 4, 5)) * 2 + 1
    norm = layers.ParamFreeNorm(kind)
    v = norm.init(jax.random.PRNGKey(0), x, train=False)
    if kind == 'batch':
      v = {'batch_stats': {'mean': _normal(1, (5,)),
                           'var': jax.random.uniform(jax.random.PRNGKey(2),
                                                     (5,), minval=0.5,
                                                     maxval=1.5)}}
    y = norm.apply(v, x, train=False)
    mean, rstd = norm.apply(v, x, train=False, stats_only=True)
    if kind == 'batch':
      self.assertEqual(mean.shape, (5,))
      np.testing.assert_array_equal(mean, v['batch_stats']['mean'])
      np.testing.assert_allclose(
          rstd, 1 / np.sqrt(np.asarray(v['batch_stats']['var']) + 1e-5),
          rtol=1e-6)
    else:
      self.assertEqual(mean.shape, (2, 1, 1, 5))
    np.testing.assert_allclose((x - mean) * rstd, y, rtol=1e-6, atol=1e-6)
    self.assertGreater(float(jnp.abs(y - x).max()), 0.1)  # Not identity.


def _randomize(variables, seed):
  """Perturbed params, random running stats, converged spectral-norm pairs."""
  rng = np.random.default_rng(seed)
  params = jax.tree.map(
      lambda p: p + 0.1 * rng.standard_normal(p.shape).astype(np.float32),
      flax.core.unfreeze(variables['params']))
  flat_params = flax.traverse_util.flatten_dict(params)
  stats = {}
  for path, value in flax.traverse_util.flatten_dict(
      flax.core.unfreeze(variables.get('batch_stats', {}))).items():
    if path[-1] == 'mean':
      value = 0.1 * rng.standard_normal(value.shape)
    elif path[-1] == 'var':
      value = rng.uniform(0.5, 1.5, value.shape)
    else:  # Spectral norm: the top singular pair, so sigma is not tiny.
      u, _, vt = np.linalg.svd(_w_mat(flat_params[path[:-1] + ('kernel',)]))
      value = u[:, 0] if path[-1] == 'u' else vt[0]
    stats[path] = jnp.asarray(value, jnp.float32)
  out = {'params': params}
  if stats:
    out['batch_stats'] = flax.traverse_util.unflatten_dict(stats)
  return out


class SpadeEvalFastPathTest(parameterized.TestCase):
  """Eval-mode Winograd SPADE equals the same module with conv_impl='xla'."""

  def _compare(self, make, args, seed=0, expect_band_source=None):
    """make(conv_impl) -> eval module; returns (fast, reference, vars)."""
    fast, ref = make('cpu'), make('xla')
    init_module = make('xla').clone(train=True)
    v = _randomize(jax.jit(init_module.init)(jax.random.PRNGKey(seed),
                                               *args), seed)
    want = jax.jit(lambda v: ref.apply(v, *args))(v)
    with _force_winograd(), mock.patch.object(
        layers, 'winograd_conv3x3',
        wraps=layers.winograd_conv3x3) as spy, mock.patch.object(
            layers, 'label_conv_rows', wraps=layers.label_conv_rows) as rows:
      got = jax.jit(lambda v: fast.apply(v, *args))(v)
    self.assertGreater(spy.call_count, 0)  # It took the Winograd path.
    if expect_band_source is not None:
      self.assertEqual(rows.call_count > 0, expect_band_source)
    self.assertTrue(np.isfinite(np.asarray(want)).all())
    self.assertGreater(float(jnp.std(want)), 1e-2)
    _assert_close(got, want, rtol=2e-5)
    return got, want, v

  def _inputs(self, b=2, h=11, w=7, c=4, z='image', label_scale=1):
    x = _normal(10, (b, h, w, c))
    label = jax.random.randint(jax.random.PRNGKey(11),
                               (b, h * label_scale, w * label_scale), 0, 5)
    if z == 'image':
      z = _normal(12, (b, 3))
    elif z == 'pixel':
      z = _normal(12, (b, h * label_scale, w * label_scale, 3))
    return x, label, z

  @parameterized.product(norm=['batch', 'instance'],
                         z=['none', 'image', 'pixel'])
  def test_spade(self, norm, z):
    x, label, z_arr = self._inputs(z=z, label_scale=2)
    z_dim = 0 if z == 'none' else 3
    make = lambda impl: spade.SPADE(5, z_dim, 6, norm, train=False,
                                    label_conv='gather', conv_impl=impl)
    self._compare(make, (x, label, None if z == 'none' else z_arr),
                  expect_band_source=z != 'pixel')

  def test_spade_dense_label_conv(self):
    x, label, z = self._inputs()
    make = lambda impl: spade.SPADE(5, 3, 6, 'batch', train=False,
                                    label_conv='dense', conv_impl=impl)
    self._compare(make, (x, label, z), expect_band_source=False)

  @parameterized.parameters('batch', 'instance')
  def test_spade_projection_folds_the_shortcut_conv(self, norm):
    x, label, z = self._inputs()
    project = _normal(13, (4, 3))
    module = lambda impl: spade.SPADE(5, 3, 6, norm, train=False,
                                      label_conv='gather', conv_impl=impl)
    v = _randomize(jax.jit(module('xla').clone(train=True).init)(
        jax.random.PRNGKey(0), x, label, z), 0)
    ref = jax.jit(lambda v, p: module('xla').apply(v, x, label, z, project=p))
    want = jnp.einsum('bhwc,co->bhwo', ref(v, None), project,
                      precision='highest')
    _assert_close(ref(v, project), want, rtol=2e-5)
    with _force_winograd(), mock.patch.object(
        layers, 'winograd_conv3x3', wraps=layers.winograd_conv3x3) as spy:
      got = jax.jit(lambda v: module('cpu').apply(
          v, x, label, z, project=project))(v)
    spy.assert_called()
    _assert_close(got, want, rtol=2e-5)

  def test_spade_projection_in_train_mode_is_an_error(self):
    x, label, z = self._inputs(h=4, w=4)
    module = spade.SPADE(5, 3, 6, train=True)
    v = jax.jit(module.init)(jax.random.PRNGKey(0), x, label, z)
    with self.assertRaisesRegex(ValueError, 'eval mode'):
      module.apply(v, x, label, z, project=jnp.ones((4, 2)),
                   mutable=['batch_stats'])

  @parameterized.named_parameters(
      ('narrowing_batch_z_image', 4, 3, 'batch', 'image'),
      ('narrowing_instance_z_pixel', 4, 3, 'instance', 'pixel'),
      ('same_width_batch_z_pixel', 4, 4, 'batch', 'pixel'),
      ('same_width_instance_no_z', 4, 4, 'instance', 'none'),
      ('narrowing_batch_no_z', 4, 2, 'batch', 'none'))
  def test_resblock(self, fin, fout, norm, z):
    x, label, z_arr = self._inputs(c=fin, z=z)
    z_dim = 0 if z == 'none' else 3
    make = lambda impl: spade.SPADEResBlock(
        fout, 5, z_dim, 6, norm, train=False, label_conv='gather',
        conv_impl=impl)
    got, _, _ = self._compare(make, (x, label, None if z == 'none' else z_arr))
    self.assertEqual(got.shape, x.shape[:3] + (fout,))

  @parameterized.named_parameters(('large_map', 4, 3, True),
                                  ('small_map', 1, 1, False))
  def test_resblock_folds_the_shortcut_only_where_it_pays(self, h, w, folds):
    # fin=4 -> fout=2: the fold pays for more than 4 * 2 / 2 = 4 pixels.
    x, label, z = self._inputs(b=2, h=h, w=w, c=4)
    self.assertEqual(spade.folds_shortcut(x.shape, 2), folds)
    make = lambda impl: spade.SPADEResBlock(
        2, 5, 3, 6, 'batch', train=False, label_conv='gather',
        conv_impl=impl)
    v = _randomize(jax.jit(make('xla').clone(train=True).init)(
        jax.random.PRNGKey(0), x, label, z), 0)
    with mock.patch.object(spade, '_modulate', wraps=spade._modulate) as mod:
      got = jax.jit(lambda v: make('cpu').apply(v, x, label, z))(v)
    self.assertEqual(any(c.args[3] is not None for c in mod.call_args_list),
                     folds)
    want = jax.jit(lambda v: make('xla').apply(v, x, label, z))(v)
    self.assertGreater(float(jnp.std(want)), 1e-2)
    _assert_close(got, want, rtol=2e-5)

  def test_resblock_eval_mode_leaves_state_alone(self):
    x, label, z = self._inputs(c=4)
    module = spade.SPADEResBlock(3, 5, 3, 6, train=False, label_conv='gather')
    v = _randomize(jax.jit(module.clone(train=True).init)(
        jax.random.PRNGKey(0), x, label, z), 0)
    with _force_winograd():
      _, mutated = jax.jit(lambda v: module.apply(
          v, x, label, z, mutable=['batch_stats']))(v)
    self.assertEqual(jax.tree.structure(mutated['batch_stats']),
                     jax.tree.structure(v['batch_stats']))
    for a, b in zip(jax.tree.leaves(mutated['batch_stats']),
                    jax.tree.leaves(v['batch_stats'])):
      np.testing.assert_array_equal(a, b)

  # A widening block (fin < fout) keeps its plain shortcut in eval mode: no
  # power iteration of conv_s (once a bug: it ran with train=True).
  def test_resblock_widening_in_eval_mode(self):
    x, label, z = self._inputs(c=2)
    make = lambda impl: spade.SPADEResBlock(
        4, 5, 3, 6, 'batch', train=False, label_conv='gather',
        conv_impl=impl)
    self._compare(make, (x, label, z))


if __name__ == '__main__':
  absltest.main()
