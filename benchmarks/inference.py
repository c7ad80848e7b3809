"""Benchmark of eval-mode generation (the EMA generator at inference).

  python -m benchmarks.inference --config=configs/ade20k.py \
      --config.data.image_size=64 --config.train.batch_size=1 \
      --config.generator.channels=16

The batch is config.train.batch_size label maps. Prints a table and, as its
last line, one JSON object with s_per_image, images_per_s, compile_s,
peak_memory_mib (accelerator; CPU: peak RSS), flops_per_image and flop_per_s
(of the direct convolutions: the Winograd path does fewer, so flop_per_s is a
direct-conv equivalent) and peak_fraction.
"""


from absl import app
from absl import flags
from ml_collections import config_flags

from benchmarks import common
from benchmarks import measure

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Model config.',
                                          lock_config=True)
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed calls.')
_RUNS = flags.DEFINE_integer('runs', 7, 'Timed calls (median).')


def main(argv):
  del argv
  result = measure.inference(_CONFIG.value, _WARMUP.value, _RUNS.value)
  common.print_table([(k, str(v)) for k, v in result.items()])
  common.print_json(result)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)
