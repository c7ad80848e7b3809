"""Benchmark of the mIoU segmenters at their protocols' sizes.

  python -m benchmarks.segmenters [--protocols=cityscapes/drn,...] \
      [--batch_size=1] [--dtype=float32] [--warmup=1] [--runs=5]

For each protocol: random weights (speed does not depend on them), images of
the data set's generated size, `protocol.predict` jitted; compile time apart,
then the median of --runs timed calls after --warmup. Prints a table and, as
its last line, one JSON object per protocol with images_per_s, s_per_batch,
compile_s, flops_per_image (XLA's estimate of the lowered program) and
peak_memory_mib (accelerator; CPU: the process's peak RSS so far).
"""

import functools

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from oasis_jax.evaluation.segmenters import networks
from oasis_jax.evaluation.segmenters import protocol as protocol_lib

# Protocol -> the generated image size (height, width) of its data set.
SIZES = {'cityscapes/drn': (256, 512), 'ade20k/single_scale': (256, 256),
         'ade20k/csail_multiscale': (256, 256),
         'coco_stuff/deeplab_msc': (256, 256),
         'coco_stuff/imaginaire': (256, 256)}
_PROTOCOLS = flags.DEFINE_list(
    'protocols', ['cityscapes/drn', 'ade20k/single_scale',
                  'coco_stuff/deeplab_msc'], f'Some of {sorted(SIZES)}.')
_BATCH = flags.DEFINE_integer('batch_size', 1, 'Images per call.')
_DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'],
                           'The segmenter\'s compute dtype.')
_WARMUP = flags.DEFINE_integer('warmup', 1, 'Untimed calls.')
_RUNS = flags.DEFINE_integer('runs', 5, 'Timed calls (median).')


def measure(name: str, batch_size: int, dtype, warmup: int,
            runs: int) -> dict:
  """images/s and the rest of one protocol (see the module docstring)."""
  protocol = protocol_lib.get(*name.split('/'))
  h, w = SIZES[name]
  model = networks.get(protocol.network).make(protocol.num_classes)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0),
                                  jnp.zeros((1, 64, 64, 3)))
  images = jnp.asarray(np.random.default_rng(0).uniform(
      -1, 1, (batch_size, h, w, 3)), jnp.float32)
  fn = jax.jit(functools.partial(protocol_lib.predict, protocol,
                                 dtype=dtype))
  compiled, compile_s, _ = common.compile_with_cost(fn, variables, images)
  flops = common.lowered_flops(fn, variables, images)
  median, _ = common.time_compiled(lambda: compiled(variables, images),
                                   warmup, runs)
  return {'protocol': name, 'network': protocol.network,
          'image_hw': [h, w], 'batch_size': batch_size,
          'dtype': jnp.dtype(dtype).name, 'images_per_s': batch_size / median,
          's_per_batch': median, 'compile_s': compile_s,
          'flops_per_image': flops / batch_size if flops else None,
          'device': jax.devices()[0].device_kind,
          **common.peak_memory()}


def main(argv):
  del argv
  results = [measure(name, _BATCH.value, jnp.dtype(_DTYPE.value),
                     _WARMUP.value, _RUNS.value)
             for name in _PROTOCOLS.value]
  for r in results:
    common.print_table([(k, str(v)) for k, v in r.items()])
    print()
  common.print_json({'segmenters': results})


if __name__ == '__main__':
  app.run(main)
