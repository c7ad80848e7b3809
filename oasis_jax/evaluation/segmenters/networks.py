"""The three segmenters by name: build, load weights, test-time scores.

`python -m oasis_jax.evaluation.segmenters.networks --network=NAME --input=FILE
--output=FILE.npz` converts a published checkpoint (CSAIL's UperNet: the two
files, comma-separated, encoder first) to one `.npz` with the reference key
names, which loads without torch.
"""

import dataclasses
from typing import Any, Callable, Sequence

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from oasis_jax.pretrained import weight_files
from oasis_jax.evaluation.segmenters import deeplab
from oasis_jax.evaluation.segmenters import drn
from oasis_jax.evaluation.segmenters import layers
from oasis_jax.evaluation.segmenters import upernet


class MissingSegmenterWeightsError(FileNotFoundError):
  """A segmenter's weight file is not configured or does not exist."""


@dataclasses.dataclass(frozen=True)
class Network:
  """A segmenter: its module, converter and published weight files."""
  name: str
  module: type[nn.Module]
  num_classes_of: Callable[[dict], int]
  from_state_dict: Callable[..., dict]
  published: str  # Where the released weights are (for messages and docs).

  def make(self, num_classes: int, dtype: Any = jnp.float32) -> nn.Module:
    return self.module(num_classes=num_classes, dtype=dtype)


NETWORKS = {
    drn.NAME: Network(
        drn.NAME, drn.DRNSeg, drn.num_classes_of, drn.from_state_dict,
        'fyu/drn: the DRN-D-105 file of '
        'http://go.yf.io/drn-cityscapes-models (a DRNSeg state dict, the '
        'README\'s "Testing" section)'),
    upernet.NAME: Network(
        upernet.NAME, upernet.UPerNet, upernet.num_classes_of,
        upernet.from_state_dict,
        'CSAILVision/semantic-segmentation-pytorch: '
        'ckpt/ade20k-resnet101-upernet/encoder_epoch_50.pth and '
        'decoder_epoch_50.pth'),
    deeplab.NAME: Network(
        deeplab.NAME, deeplab.MSC, deeplab.num_classes_of,
        deeplab.from_state_dict,
        'kazuto1011/deeplab-pytorch: '
        'deeplabv2_resnet101_msc-cocostuff164k-100000.pth'),
}


def get(name: str) -> Network:
  if name not in NETWORKS:
    raise ValueError(f'Unknown segmenter {name!r}; one of '
                     f'{", ".join(sorted(NETWORKS))}.')
  return NETWORKS[name]


def read_state_dict(name: str, path: str, *,
                    setting: str = 'config.eval.segmenter_weights') -> dict:
  """The reference-named state dict of `path` (UperNet: 'ENC,DEC' or one
  merged file with `encoder.`/`decoder.` keys)."""
  states = []
  for p in (path.split(',') if path else ['']):
    try:
      state = weight_files.read_state_dict(p, what=f'{name} weights')
    except FileNotFoundError:
      raise MissingSegmenterWeightsError(
          f'{p or "(no path)"}: no such file; set {setting} to the {name} '
          f'weights ({get(name).published}, or its .npz).') from None
    states.append(weight_files.split_provenance(state)[0])
  if name == upernet.NAME and len(states) == 2:
    return upernet.merge_state_dicts(*states)
  if len(states) != 1:
    raise ValueError(f'{path}: expected one weight file for {name}.')
  return states[0]


def load(name: str, path: str, *, dtype: Any = jnp.float32,
         setting: str = 'config.eval.segmenter_weights'
         ) -> tuple[nn.Module, dict]:
  """(module, variables) of segmenter `name` from its weight file(s)."""
  network = get(name)
  state = read_state_dict(name, path, setting=setting)
  variables = network.from_state_dict(state, what=path)
  return network.make(network.num_classes_of(state), dtype), variables


def scores(model: nn.Module, variables, x, size: Sequence[int], *,
           align_corners: bool = False):
  """Per-class scores at `size` [B, h, w, C], float32, argmax-ready.

  DRN: log-softmax of the fixed bilinear `up` (cropped to the input size
  when that is not a multiple of 8; resized bilinearly when that differs
  from `size`); UperNet: softmax of the logits resized to `size`; DeepLab:
  softmax of MSC's output resized to `size` (with `align_corners`, as
  imaginaire does, else half-pixel as the DeepLab repository does).
  """
  h, w = size
  if isinstance(model, drn.DRNSeg):
    out = model.apply(variables, x, method=drn.DRNSeg.test_output)
    out = out[:, :x.shape[1], :x.shape[2]]
    return layers.resize_bilinear(out, h, w)
  if isinstance(model, upernet.UPerNet):
    return model.apply(variables, x, (h, w),
                       method=upernet.UPerNet.test_output)
  logits = model.apply(variables, x).astype(jnp.float32)
  resize = (layers.resize_bilinear_aligned if align_corners
            else layers.resize_bilinear)
  return jax.nn.softmax(resize(logits, h, w), -1)


def convert_file(name: str, src: str, dst: str) -> None:
  """Writes `src`'s state dict, checked against the network, as an .npz."""
  state = read_state_dict(name, src, setting='--input')
  get(name).from_state_dict(state, what=src)  # Rejects a wrong file.
  state = {k: np.asarray(v) for k, v in state.items()}
  sources = ','.join(weight_files.sha256_file(p) for p in src.split(','))
  state[weight_files.NPZ_SOURCE_SHA256] = np.array(sources)
  state[weight_files.NPZ_CONTENT_SHA256] = np.array(
      weight_files.content_sha256({k: v for k, v in state.items()
                                   if not k.startswith('__')}))
  np.savez(dst, **state)


def main(argv: Sequence[str]) -> None:
  """`python -m oasis_jax.evaluation.segmenters.networks --network=N --input=A
  --output=B.npz`."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  f = flags.FLAGS
  convert_file(f.network, f.input, f.output)
  print(f'Wrote {f.output}.')


if __name__ == '__main__':
  flags.DEFINE_enum('network', None, sorted(NETWORKS),
                    'The segmenter whose weights are converted.')
  flags.DEFINE_string('input', None, 'The published .pth (UperNet: '
                      'ENCODER.pth,DECODER.pth), or an .npz.')
  flags.DEFINE_string('output', None, 'The .npz to write.')
  flags.mark_flags_as_required(['network', 'input', 'output'])
  app.run(main)
