"""The three segmenters as ONNX graphs built from their Flax variables.

  python -m oasis_jax.evaluation.segmenters.onnx_export \
      --protocol=cityscapes/drn --weights=drn_d_105.npz \
      --height=256 --width=512 --output=drn_d_105.onnx

writes the network of a data set's protocol with converted weights (the
`.npz` of `segmenters.networks`, or the published files) as an .onnx file for
the ONNX route (`evaluate --segmenter=FILE.onnx`); a missing or wrong weight
file is one FATAL line naming it.

The graph takes the ONNX route's input (`segmentation.OnnxSegmenter`): NCHW
float32 images normalised with the ImageNet mean/std, any batch, the height
and width fixed at export. A 1x1 convolution turns them into the protocol's
input (channel order, pixel scale, mean/std); then the network, node for
node as the Flax modules compute it, with each BatchNorm folded into its
convolution. The output `scores` [B, C, h, w] is `reference_scores`'s:
DRN's fixed bilinear `up` of its logits (cropped to the input size), UperNet's
stride-4 logits, MSC's fused stride-8 logits; their argmax is the class.
"""

import dataclasses
import itertools
from typing import Any, Mapping, NamedTuple, Optional, Sequence

from absl import app
from absl import flags
import jax.numpy as jnp
import numpy as np
import onnx
from onnx import helper
from onnx import numpy_helper

from oasis_jax.runtime import fatal
from oasis_jax.evaluation import segmentation
from oasis_jax.evaluation.segmenters import deeplab
from oasis_jax.evaluation.segmenters import drn
from oasis_jax.evaluation.segmenters import layers
from oasis_jax.evaluation.segmenters import networks
from oasis_jax.evaluation.segmenters import protocol as protocol_lib
from oasis_jax.evaluation.segmenters import upernet

OPSET = 18  # Resize with `axes` (sizes of H and W only, any batch).
IR_VERSION = 9  # That of opset 18 (onnx 1.13); onnxruntime >= 1.14 reads it.


class _T(NamedTuple):
  """A tensor of the graph: its name and spatial size (NCHW)."""
  name: str
  h: int
  w: int


@dataclasses.dataclass(frozen=True)
class _Scope:
  """A Flax variables subtree: `params`, `batch_stats` and its dotted path."""
  params: Mapping
  stats: Mapping
  path: str = ''

  def __getitem__(self, key: str) -> '_Scope':
    return _Scope(self.params[key], self.stats.get(key, {}),
                  f'{self.path}.{key}' if self.path else key)


class _Graph:
  """Nodes and initializers (shared by name: MSC runs one base 3 times)."""

  def __init__(self):
    self.nodes, self.initializers = [], {}
    self._ids = itertools.count()

  def const(self, name: str, value) -> str:
    if name not in self.initializers:
      self.initializers[name] = numpy_helper.from_array(np.asarray(value),
                                                        name)
    return name

  def op(self, op_type: str, inputs: Sequence[str], **attrs) -> str:
    out = f'{op_type.lower()}_{next(self._ids)}'
    self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
    return out


def _conv(g: _Graph, x: _T, conv: _Scope, bn: Optional[_Scope] = None, *,
          stride: int = 1, dilation: int = 1, relu: bool = False) -> _T:
  """`layers.conv` (symmetric padding dilation (k - 1) / 2), its BN folded
  in: w' = w s, b' = (b - mean) s + beta, s = gamma / sqrt(var + eps)."""
  kernel = np.asarray(conv.params['kernel'], np.float32)  # HWIO.
  w = kernel.transpose(3, 2, 0, 1)
  b = np.asarray(conv.params.get('bias', np.zeros(w.shape[0])), np.float32)
  if bn is not None:
    s = np.asarray(bn.params['scale']) / np.sqrt(
        np.asarray(bn.stats['var']) + layers.BN_EPSILON)
    w = w * s[:, None, None, None]
    b = (b - np.asarray(bn.stats['mean'])) * s + np.asarray(bn.params['bias'])
  k = w.shape[2]
  pad = dilation * (k - 1) // 2
  out = g.op('Conv', [x.name,
                      g.const(f'{conv.path}.weight', w.astype(np.float32)),
                      g.const(f'{conv.path}.bias', b.astype(np.float32))],
             pads=[pad] * 4, strides=[stride] * 2, dilations=[dilation] * 2)
  size = [(n + 2 * pad - dilation * (k - 1) - 1) // stride + 1
          for n in (x.h, x.w)]
  return _T(g.op('Relu', [out]) if relu else out, *size)


def _conv_bn(g, x, s: _Scope, names=('0', '1'), **kw) -> _T:
  return _conv(g, x, s[names[0]], s[names[1]], **kw)


def _add_relu(g, a: _T, b: _T) -> _T:
  return a._replace(name=g.op('Relu', [g.op('Add', [a.name, b.name])]))


def _bottleneck_stage(g, x, s: _Scope, num_blocks: int, stride: int,
                      dilation: int) -> _T:
  """`layers.BottleneckStage` (torchvision layout; block 0 projects)."""
  for i in range(num_blocks):
    b, st = s[str(i)], stride if i == 0 else 1
    y = _conv(g, x, b['conv1'], b['bn1'], relu=True)
    y = _conv(g, y, b['conv2'], b['bn2'], stride=st, dilation=dilation,
              relu=True)
    y = _conv(g, y, b['conv3'], b['bn3'])
    if i == 0:
      x = _conv_bn(g, x, b['downsample'], stride=st)
    x = _add_relu(g, x, y)
  return x


def _max_pool(g, x: _T, *, ceil_mode: bool = False) -> _T:
  """`layers.max_pool_3x3_s2`: its extra -inf row/column as end padding."""
  ends = [1 + (ceil_mode and n % 2 == 0) for n in (x.h, x.w)]
  out = g.op('MaxPool', [x.name], kernel_shape=[3, 3], strides=[2, 2],
             pads=[1, 1] + ends)
  return _T(out, *[(n + 1 + e - 3) // 2 + 1 for n, e in zip((x.h, x.w),
                                                             ends)])


def _resize(g, x: _T, h: int, w: int) -> _T:
  """`layers.resize_bilinear`: half-pixel linear, no antialiasing."""
  if (x.h, x.w) == (h, w):
    return x
  sizes = g.const(f'sizes_{h}x{w}', np.array([h, w], np.int64))
  return _T(g.op('Resize', [x.name, '', '', sizes], axes=[2, 3],
                 mode='linear', coordinate_transformation_mode='half_pixel'),
            h, w)


def _rescale(g, x: _T, factor: float) -> _T:
  """`layers.rescale_bilinear`: floor(n p) outputs sampled with p itself."""
  scales = g.const(f'scales_{factor:g}', np.array([factor] * 2, np.float32))
  out = g.op('Resize', [x.name, '', scales], axes=[2, 3], mode='linear',
             coordinate_transformation_mode='half_pixel')
  return _T(out, int(np.floor(x.h * factor)), int(np.floor(x.w * factor)))


def _adaptive_avg_pool(g, x: _T, size: int) -> _T:
  """`layers.adaptive_avg_pool` as two matrix products: Mh x Mw^T."""
  mh = g.const(f'pool_{x.h}_to_{size}',
               layers.adaptive_pool_matrix(x.h, size))
  mw = g.const(f'pool_{x.w}_to_{size}_t',
               layers.adaptive_pool_matrix(x.w, size).T)
  return _T(g.op('MatMul', [g.op('MatMul', [mh, x.name]), mw]), size, size)


def _drn(g, x: _T, s: _Scope) -> _T:
  """`drn.DRNSeg`, then `drn.upsample` (a grouped ConvTranspose), cropped."""
  h, w = x.h, x.w
  base = s['base']
  for i, (_, _, stride) in enumerate(drn.STEM):
    x = _conv_bn(g, x, base[str(i)], stride=stride, relu=True)
  for i, (_, blocks, stride, dilation) in enumerate(drn.STAGES, 3):
    x = _bottleneck_stage(g, x, base[str(i)], blocks, stride, dilation)
  for i, dilation in drn.TAIL:
    x = _conv_bn(g, x, base[str(i)], dilation=dilation, relu=True)
  x = _conv(g, x, s['seg'])
  c = s.params['seg']['bias'].shape[0]
  up = g.op('ConvTranspose', [x.name, g.const('up.weight', drn.up_weight(c))],
            group=c, kernel_shape=[16, 16], strides=[8, 8], pads=[4] * 4)
  if (8 * x.h, 8 * x.w) == (h, w):
    return _T(up, h, w)
  ends = g.const(f'crop_{h}x{w}', np.array([h, w], np.int64))
  return _T(g.op('Slice', [up, g.const('zeros2', np.zeros(2, np.int64)), ends,
                           g.const('axes_hw', np.array([2, 3], np.int64))]),
            h, w)


def _concat(g, xs: Sequence[_T]) -> _T:
  return xs[0]._replace(name=g.op('Concat', [x.name for x in xs], axis=1))


def _upernet(g, x: _T, s: _Scope) -> _T:
  """`upernet.UPerNet`: the stride-4 logits."""
  enc, dec = s['encoder'], s['decoder']
  for i, (_, stride) in enumerate(upernet.STEM, 1):
    x = _conv(g, x, enc[f'conv{i}'], enc[f'bn{i}'], stride=stride, relu=True)
  x = _max_pool(g, x)
  conv_out = []
  for i, (_, blocks, stride) in enumerate(upernet.STAGES, 1):
    x = _bottleneck_stage(g, x, enc[f'layer{i}'], blocks, stride, 1)
    conv_out.append(x)
  conv5 = conv_out[-1]
  ppm = [conv5]
  for i, size in enumerate(upernet.POOL_SCALES):
    pooled = _resize(g, _adaptive_avg_pool(g, conv5, size), conv5.h, conv5.w)
    ppm.append(_conv_bn(g, pooled, dec['ppm_conv'][str(i)], relu=True))
  f = _conv_bn(g, _concat(g, ppm), dec['ppm_last_conv'], relu=True)
  pyramid = [f]
  for i in reversed(range(len(conv_out) - 1)):
    lateral = _conv_bn(g, conv_out[i], dec['fpn_in'][str(i)], relu=True)
    f = lateral._replace(name=g.op('Add', [
        lateral.name, _resize(g, f, lateral.h, lateral.w).name]))
    pyramid.insert(0, _conv_bn(g, f, dec['fpn_out'][str(i)]['0'], relu=True))
  top = pyramid[0]
  fusion = _concat(g, [top] + [_resize(g, p, top.h, top.w)
                               for p in pyramid[1:]])
  x = _conv_bn(g, fusion, dec['conv_last']['0'], relu=True)
  return _conv(g, x, dec['conv_last']['1'])


def _deeplab_v2(g, x: _T, s: _Scope) -> _T:
  """`deeplab.DeepLabV2`: the summed ASPP logits at output stride 8."""
  x = _conv_bn(g, x, s['layer1']['conv1'], deeplab.CBR_NAMES, stride=2,
               relu=True)
  x = _max_pool(g, x, ceil_mode=True)
  for i, (_, blocks, stride, dilation) in enumerate(deeplab.STAGES, 2):
    for j in range(blocks):
      b, st = s[f'layer{i}'][f'block{j + 1}'], stride if j == 0 else 1
      y = _conv_bn(g, x, b['reduce'], deeplab.CBR_NAMES, stride=st, relu=True)
      y = _conv_bn(g, y, b['conv3x3'], deeplab.CBR_NAMES, dilation=dilation,
                   relu=True)
      y = _conv_bn(g, y, b['increase'], deeplab.CBR_NAMES)
      if j == 0:
        x = _conv_bn(g, x, b['shortcut'], deeplab.CBR_NAMES, stride=st)
      x = _add_relu(g, x, y)
  branches = [_conv(g, x, s['aspp'][f'c{i}'], dilation=rate)
              for i, rate in enumerate(deeplab.ATROUS_RATES)]
  return branches[0]._replace(name=g.op('Sum', [b.name for b in branches]))


def _deeplab_msc(g, x: _T, s: _Scope) -> _T:
  """`deeplab.MSC`: the maximum over scales 1, 0.5, 0.75 on scale 1's grid."""
  logits = _deeplab_v2(g, x, s['base'])
  fused = [logits.name]
  for p in deeplab.MSC_SCALES:
    small = _deeplab_v2(g, _rescale(g, x, p), s['base'])
    fused.append(_resize(g, small, logits.h, logits.w).name)
  return logits._replace(name=g.op('Max', fused))


_BUILDERS = {drn.NAME: _drn, upernet.NAME: _upernet,
             deeplab.NAME: _deeplab_msc}


def _input_conversion(g, x: _T, protocol: protocol_lib.Protocol) -> _T:
  """ImageNet-normalised R, G, B -> the protocol's input, as one 1x1 conv:
  channel c reads source channel src(c) (reversed when `bgr`)."""
  in_mean = np.asarray(segmentation.IMAGENET_MEAN, np.float64)
  in_std = np.asarray(segmentation.IMAGENET_STD, np.float64)
  w, b = np.zeros((3, 3, 1, 1)), np.zeros(3)
  for c in range(3):
    src = 2 - c if protocol.bgr else c
    k = 255 * protocol.pixel_scale / protocol.std[c]
    w[c, src] = k * in_std[src]
    b[c] = k * in_mean[src] - protocol.mean[c] / protocol.std[c]
  out = g.op('Conv', [x.name, g.const('input.weight', w.astype(np.float32)),
                      g.const('input.bias', b.astype(np.float32))])
  return x._replace(name=out)


def export(protocol: protocol_lib.Protocol, variables,
           hw: Sequence[int]) -> onnx.ModelProto:
  """The ONNX model of `protocol.network` with `variables` at image size hw.

  Args:
    protocol: gives the network and its input normalisation.
    variables: the network's Flax variables (`networks.load`).
    hw: (height, width) of the input images.

  Returns:
    A checked model: input `images` [B, 3, H, W] (ImageNet-normalised),
    output `scores` [B, C, h, w].
  """
  g, (h, w) = _Graph(), hw
  x = _input_conversion(g, _T('images', h, w), protocol)
  scope = _Scope(variables['params'], variables.get('batch_stats', {}))
  out = _BUILDERS[protocol.network](g, x, scope)
  g.nodes.append(helper.make_node('Identity', [out.name], ['scores']))
  graph = helper.make_graph(
      g.nodes, protocol.network,
      [helper.make_tensor_value_info('images', onnx.TensorProto.FLOAT,
                                     ['batch', 3, h, w])],
      [helper.make_tensor_value_info('scores', onnx.TensorProto.FLOAT,
                                     ['batch', protocol.num_classes, out.h,
                                      out.w])],
      initializer=list(g.initializers.values()))
  model = helper.make_model(graph, producer_name='oasis_jax',
                            opset_imports=[helper.make_opsetid('', OPSET)])
  model.ir_version = IR_VERSION
  onnx.checker.check_model(model)
  return model


def onnx_input(pixels) -> np.ndarray:
  """0..255 R, G, B pixels [B, H, W, 3] -> the graph's input [B, 3, H, W]."""
  x = np.asarray(pixels, np.float32) / 255
  x = (x - np.asarray(segmentation.IMAGENET_MEAN, np.float32)) / np.asarray(
      segmentation.IMAGENET_STD, np.float32)
  return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def reference_scores(protocol: protocol_lib.Protocol, variables, pixels,
                     dtype: Any = jnp.float32):
  """What the exported graph computes, in Flax: [B, h, w, C] (NHWC).

  Args:
    protocol: the network and its input normalisation.
    variables: the network's Flax variables.
    pixels: [B, H, W, 3] float 0..255, R, G, B.
    dtype: the network's compute dtype.
  """
  model = networks.get(protocol.network).make(protocol.num_classes, dtype)
  x = protocol_lib.normalized(protocol, jnp.asarray(pixels, jnp.float32),
                              dtype)
  out = model.apply(variables, x)
  if protocol.network == drn.NAME:
    out = drn.upsample(out)[:, :x.shape[1], :x.shape[2]]
  return out.astype(jnp.float32)


def main(argv: Sequence[str]) -> None:
  """Writes --output from --weights (see the module docstring)."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  f = flags.FLAGS
  protocol = protocol_lib.get(*f.protocol.split('/', 1))
  _, variables = networks.load(protocol.network, f.weights,
                               setting='--weights')
  model = export(protocol, variables, (f.height, f.width))
  onnx.save(model, f.output)
  print(f'Wrote {f.output}: {protocol.network}, images [B, 3, {f.height}, '
        f'{f.width}] (ImageNet-normalised) -> scores.')


if __name__ == '__main__':
  flags.DEFINE_string('protocol', None, 'DATA_SET[/VARIANT] of '
                      'segmenters/protocol.py, e.g. cityscapes/drn: the '
                      'network and its input normalisation.')
  flags.DEFINE_string('weights', None, 'The network\'s weights (.pth or the '
                      '.npz of segmenters/networks.py; UperNet: ENC,DEC).')
  flags.DEFINE_integer('height', None, 'Image height the graph takes.')
  flags.DEFINE_integer('width', None, 'Image width the graph takes.')
  flags.DEFINE_string('output', None, 'The .onnx file to write.')
  flags.mark_flags_as_required(
      ['protocol', 'weights', 'height', 'width', 'output'])
  fatal.run_main(main)
