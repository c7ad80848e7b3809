"""LVIS v1 at 256x256: 1203 long-tailed categories, the COCO-Stuff recipe."""

from configs import default as default_lib
from data_pipelines.lvis import dataset as lvis_dataset


def get_config():
  """LVIS v1 (1204 class ids: category ids 1..1203, 0 = unlabeled)."""
  config = default_lib.get_config()
  data = config.data
  data.name = 'lvis'
  # num_classes 1204, dontcare 0, 256x256 crops of 286x286, flips.
  data.update(lvis_dataset.RECIPE)
  # Overlapping objects: 'file' (official: later annotations over earlier
  # ones) or 'small_on_top' (larger masks first, smaller ones stay visible).
  data.paint_order = 'file'
  # Images without annotations (all unlabeled): dropped from training, kept
  # for evaluation.
  data.keep_unannotated_train = False
  data.keep_unannotated_val = True
  # Prepared 16-bit label PNGs ('': <root>/lvis_labels_<paint_order>); made
  # by python -m data_pipelines.prepare (or on first use).
  data.labels_dir = ''
  data.rasterize_on_the_fly = False  # True: paint labels at every read.

  config.train.batch_size = 32  # Global batch.
  config.optim.lr_g = 1e-4
  config.optim.lr_d = 4e-4
  config.loss.lambda_labelmix = 10.0
  config.ema.decay = 0.9999
  # 100 epochs of LVIS v1 train's 100,170 images: 313,031 steps.
  config.train.num_steps = 100 * 100170 // 32
  config.eval.fid_every_steps = 5000
  # 1205 logits per pixel: D's losses without storing them (steps.py).
  config.perf.fused_d_head = True
  return config
