"""Builds a data set's TFDS array_record files from its prepared folder.

  python -m data_pipelines.build --config=configs/coco.py \
      --config.data.root=DIR --config.data.tfds_data_dir=OUT

Then train with `--config.data.source=tfds --config.data.tfds_data_dir=OUT`.
No TensorFlow is needed. Run `python -m data_pipelines.inspect` first: the
build stores the files as they are and bad ones fail only when read.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

import data_pipelines



def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  data_config = flags.FLAGS.config.data
  builder = data_pipelines.build_tfds(data_config)
  print(f'{builder.name} in {builder.data_dir}:')
  for split, info in sorted(builder.info.splits.items()):
    print(f'  {split}: {info.num_examples} examples')


if __name__ == '__main__':
  # Defined here only, so that importing this module defines no flag.
  config_flags.DEFINE_config_file(
      'config', None, 'Training config file (its config.data is used).',
      lock_config=True)
  flags.mark_flags_as_required(['config'])
  app.run(main)
