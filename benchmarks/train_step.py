"""Benchmark of one OASIS training iteration (G step, D step, EMA).

  python -m benchmarks.train_step --config=configs/ade20k.py \
      --config.data.image_size=64 --config.train.batch_size=1 \
      --config.generator.channels=16 [--trace_dir=/tmp/trace]

The ablation cells: --config=configs/ablations/{oasis_vgg,spade_d,
spade_d_vgg}.py (or --config.discriminator.kind=spade, --config.loss.use_vgg=
True ...); with the VGG loss on and config.loss.vgg_weights empty, random
weights of ImageNet VGG-19's shapes are used (same cost).

Prints a table and, as its last line, one JSON object with s_per_iter,
images_per_s, compile_s, peak_memory_mib (the accelerator's own peak; on a
CPU the peak RSS), flops_per_iter (every convolution counted, on every
platform), flop_per_s and peak_fraction (of the chip's data-sheet peak).
Synthetic inputs (random image, random label map): no data set needed.
"""


from absl import app
from absl import flags
from ml_collections import config_flags

from benchmarks import common
from benchmarks import measure

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Model config.',
                                          lock_config=True)
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed iterations.')
_RUNS = flags.DEFINE_integer('runs', 5, 'Timed iterations (median).')
_TRACE_DIR = flags.DEFINE_string(
    'trace_dir', None, 'Record the warm-up and timed iterations there with '
    'jax.profiler.trace.')


def main(argv):
  del argv
  result = measure.train(_CONFIG.value, _WARMUP.value, _RUNS.value,
                         trace_dir=_TRACE_DIR.value)
  common.print_table([(k, str(v)) for k, v in result.items()])
  common.print_json(result)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)
