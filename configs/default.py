"""Default OASIS configuration: the official recipe's values (ADE20K-like)."""

import ml_collections


def get_config():
  """Returns the default configuration (official sizes, ADE20K recipe)."""
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = data = ml_collections.ConfigDict()
  # One of data_pipelines.DATASETS: 'synthetic', 'ade20k', 'cityscapes',
  # 'coco_stuff', 'folder', 'lvis'.
  data.name = 'ade20k'
  data.root = ''  # Prepared data set folder (layouts: docs/labels.md).
  data.num_classes = 151  # semantic_nc: one-hot channels, don't-care included.
  data.dontcare_id = 0  # Class id ignored by class balancing / mIoU; -1: none.
  data.image_size = 256  # Width in pixels (the official crop size).
  data.aspect_ratio = 1.0  # Width / height; the height is image_size / this.
  data.load_size = 286  # Train-time resize before the random crop (square).
  data.random_crop = True  # False: resize straight to the output size.
  data.random_flip = True
  data.palette = ''  # 'folder' only: JSON file of [r, g, b] per class id.
  data.source = 'folder'  # 'folder' (read the prepared tree) or 'tfds'.
  data.tfds_data_dir = ''  # Where the TFDS array_record build lives.
  # A folder of `python -m data_pipelines.prepare --out=DIR` (resized once;
  # training only crops and flips; same batches as the folder route). It
  # takes precedence over `source`; with `root` set, the source files are
  # checked unchanged. '': read the data set as `source` says.
  data.prepared = ''
  # Grain worker processes (0: in the main process); -1: one per usable CPU
  # core but one, at most 32, none on <= 2 cores
  # (oasis_jax/runtime/cpu_workers.py).
  # One core decodes ~140 ADE20K images/s at 256x256 (BENCHMARKS.md).
  data.num_workers = 0
  data.synthetic_num_examples = 512  # 'synthetic' only: examples per split.
  data.synthetic_seed = 0  # 'synthetic' only: content seed (not the order).

  config.generator = gen = ml_collections.ConfigDict()
  gen.channels = 64  # Width ch; block channels [16,16,16,8,4,2,1] * ch.
  gen.z_dim = 64
  gen.num_res_blocks = 6
  gen.spade_hidden = 128  # Hidden width of SPADE's shared conv.
  gen.use_3d_noise = True
  gen.use_spectral_norm = True
  gen.norm = 'batch'  # Parameter-free norm in SPADE: 'batch' or 'instance'.

  config.discriminator = disc = ml_collections.ConfigDict()
  # 'oasis': the U-Net segmenter with the N+1 loss (the paper's model);
  # 'spade': SPADE's multi-scale PatchGAN on [one-hot | image] with hinge
  # losses and feature matching (the paper's ablation, configs/ablations/).
  disc.kind = 'oasis'
  # 'oasis' only:
  disc.channels = (128, 128, 256, 256, 512, 512)  # Encoder widths.
  disc.last_channels = 64  # Width of the last decoder block.
  disc.use_spectral_norm = True
  # 'spade' only (SPADE's num_D, n_layers_D, ndf; spectral norm always):
  disc.num_scales = 2  # Sub-discriminators, each on a 2x coarser input.
  disc.num_layers = 4  # Conv groups before the logit conv.
  disc.base_channels = 64  # Width of the first conv; doubles up to 512.

  config.loss = loss = ml_collections.ConfigDict()
  # 'oasis' D only (refused with kind 'spade'):
  loss.use_class_balancing = True
  loss.use_labelmix = True
  loss.lambda_labelmix = 10.0
  # 'spade' D only: weight of the discriminator feature matching (official
  # SPADE 10); ignored by the OASIS D.
  loss.lambda_feat = 10.0
  # Either D: the VGG-19 perceptual loss on G (official --add_vgg_loss).
  loss.use_vgg = False
  loss.lambda_vgg = 10.0  # Official value.
  # vgg19-dcbb9e9d.pth (torchvision's ImageNet VGG-19) or an .npz of it
  # (python -m oasis_jax.pretrained.vgg_weights); frozen, not checkpointed.
  loss.vgg_weights = ''
  loss.verify_vgg_weights = True  # False only for other weights (tests).

  config.optim = optim = ml_collections.ConfigDict()
  optim.lr_g = 1e-4
  optim.lr_d = 4e-4
  optim.b1 = 0.0
  optim.b2 = 0.999
  optim.eps = 1e-8

  config.ema = ema = ml_collections.ConfigDict()
  ema.use_ema = True
  ema.decay = 0.9999
  ema.bn_refresh_batches = 50  # Train-mode passes before sampling the EMA G.

  config.train = train = ml_collections.ConfigDict()
  train.batch_size = 32  # Global batch, over all devices and hosts.
  train.num_steps = 200 * 20210 // 32  # 200 epochs of ADE20K's 20,210 images.
  train.log_every_steps = 100
  train.sample_every_steps = 1000  # <= 0: at the end only.
  train.checkpoint_every_steps = 10000
  train.keep_checkpoints = 3  # The last k checkpoints are kept; None: all.
  train.num_sample_images = 8  # Rows of the sample grids (val examples).
  # JAX's persistent compilation cache (oasis_jax/runtime/
  # compilation_cache.py): a restart reads the compiled step back. 'auto':
  # $XDG_CACHE_HOME/oasis_jax/jax_compilation_cache (default ~/.cache/...);
  # '': off; else a folder. JAX_COMPILATION_CACHE_DIR, when set, wins.
  train.compilation_cache_dir = 'auto'

  config.eval = ev = ml_collections.ConfigDict()
  ev.fid_every_steps = 5000  # <= 0 (e.g. -1): no FID during training.
  ev.inception_weights = ''  # pt_inception-2015-12-05-6726825d.pth or .npz.
  # Check the weights are pytorch-fid's (SHA-256); False only for other
  # weights (tests): their FIDs are not comparable with published ones.
  ev.verify_inception_weights = True
  # LPIPS (AlexNet, v0.1) weights, .npz or .pth (pretrained/lpips_weights.py);
  # set: checkpoint diversity also reports diversity_lpips. '': off.
  ev.lpips_weights = ''
  ev.num_fid_images = -1  # -1: the whole validation split.
  # mIoU with the paper's segmenters (oasis_jax/evaluation/segmenters/,
  # docs/evaluation.md) on the FID's images: '' (off), 'drn_d_105'
  # (Cityscapes), 'upernet101' (ADE20K) or 'deeplabv2_msc' (COCO-Stuff).
  ev.segmenter = ''
  # Its published weights (.pth, or .npz: no torch); UperNet: the encoder
  # and decoder files, comma-separated, or one merged .npz.
  ev.segmenter_weights = ''
  # A protocol variant of evaluation/segmenters/protocol.py ('': the data
  # set's reference default; COCO-Stuff: 'deeplab_msc' or 'imaginaire').
  ev.segmenter_protocol = ''
  ev.segmenter_dtype = 'float32'  # 'bfloat16': faster, not the paper's.
  # Also the mIoU of the real validation images ('miou_real'): the upper
  # bound papers quote.
  ev.segmenter_real_images = False
  ev.batch_size = 32
  # The best checkpoint (workdir/checkpoint_best) ranks runs by this metric
  # of the evaluation; '' keeps none.
  ev.best_metric = 'fid'
  ev.best_mode = 'min'  # 'min': lower is better; 'max'.

  config.perf = perf = ml_collections.ConfigDict()
  # 'float32', 'bfloat16' or 'float64' (needs JAX_ENABLE_X64=1); params stay
  # as stored.
  perf.compute_dtype = 'float32'
  perf.remat = False  # jax.checkpoint each generator/discriminator block.
  # D step: run D(fake), D(real), D(mixed) as one batched call (same numbers
  # up to float rounding: each chunk keeps its own spectral-norm iteration).
  perf.fuse_d_forwards = True
  # D's N+1 and LabelMix losses from the inputs of its last 1x1 conv, the
  # logits made one chunk of pixels at a time and never stored (same numbers
  # up to float rounding): for many classes (LVIS: 1205 logits per pixel).
  perf.fused_d_head = False
  # How SPADE and the stem convolve [z | one-hot]: 'dense' (a conv over the
  # materialized one-hot, as officially), 'gather' (rows of the kernel read
  # by class id; scatter-add backward), 'gather_matmul' (one-hot matmul
  # backward, for TPUs), 'auto' (resolved per platform by
  # oasis_jax/config/resolution.py: gather on CPU, dense elsewhere).
  perf.label_conv = 'auto'
  # Convolutions: 'xla', 'cpu' (works around XLA:CPU's slow cases: a matmul
  # for small maps / wide inputs, kernel gradients in bands of rows for large
  # maps; in eval mode, Winograd F(4, 3) for float32 3x3 convs to >= 128
  # channels on maps of >= 32x32), 'auto' ('cpu' on CPU, else 'xla').
  # The formulations are in oasis_jax/kernels/.
  perf.conv_impl = 'auto'
  # XLA:CPU's instruction scheduler for the training step: 'memory' (the
  # memory-optimized one: 256x256 batch 2 needs 2.7 instead of 3.7 GiB of
  # temporaries), 'concurrency' (XLA:CPU's default) or 'default'. Ignored on
  # GPU/TPU (resolved to 'default' there).
  perf.cpu_scheduler = 'memory'
  # The run-once init program: 'unoptimized' (no LLVM optimizations: halves
  # its compile time on a CPU), 'optimized', 'auto' (unoptimized on CPU).
  perf.init_compile = 'auto'
  return config
