"""LVIS v1 (1203 long-tailed object categories) on COCO 2017 images.

Modules: `dataset` (the data set: config, splits, records, prepared label
PNGs), `annotations` (the annotation files, parsed and checked),
`rasterize` (label maps painted from the annotations), `sources` (Grain
sources), `inspect` (what `python -m data_pipelines.inspect` reports).

Files as distributed, under `config.data.root`: `lvis_v1_train.json`,
`lvis_v1_val.json` and the COCO 2017 images in `train2017/` and `val2017/`
(an image's file is the last two parts of its `coco_url`; either split may
use images of both folders). Class id = LVIS category id (1..1203), 0 =
unlabeled (the don't-care class): 1204 class ids.

Label maps are painted from the annotations' polygons (or RLE) decoded with
pycocotools. Where objects overlap, `config.data.paint_order` decides:
'file' (the official rule: annotations in file order, later ones over
earlier ones) or 'small_on_top' (larger masks first, so smaller objects,
often of rare categories, stay visible; ties keep file order). An image
without annotations is all unlabeled; `config.data.keep_unannotated_train`
(default False) and `keep_unannotated_val` (default True) say whether such
images are kept.

Training reads label PNGs rasterized once by `prepare` (`python -m
data_pipelines.prepare --config=configs/lvis.py --config.data.root=DIR`,
also run on first use by a single-process run): 16-bit PNGs of class ids in
`<labels_dir>/{train,val}_label/<image stem>.png`, the COCO-Stuff layout,
read like any label map (`label_maps`: 16-bit PNGs hold ids). With
`config.data.rasterize_on_the_fly=True` the label maps are painted at every
read instead (small experiments; no preparation).
"""
