"""Makes a parity fixture by running the official PyTorch OASIS code.

  python tools/make_parity_fixture.py --oasis=OASIS_DIR --out=DIR \\
      [--preset=tiny_square] [--dtype=float32|float64] [--init_from=DIR]

--oasis is a checkout of github.com/boschresearch/OASIS (only its Python
files are needed). Its modules are imported from there and run: the
generator, discriminator, initialisation, EMA copy (models/models.py's
OASIS_model), the one-hot input (preprocess_input), the N+1 losses, class
balancing and LabelMix (models/losses.py, generate_labelmix), and the
training iteration: the three network updates of train.py's loop body,
in its order, with its Adam optimisers and utils.update_EMA. Nothing of the
official code is copied here. The fixture's files, arrays and meta.json are
those of ../shared/parity/ (docs/parity.md): the initial and stepped state
dicts, gradients, buffers after one train-mode forward, single forwards
from the initial state, and every call of the training iteration.

Run-time changes to the official code, all made by this script:

* Three widths that are literals in the official code become options, by
  replacing the literal in the module's source text before executing it
  (each replacement must match exactly once): the SPADE hidden width
  (models/norms.py, `nhidden = 128`), the discriminator's channel list
  (models/discriminator.py, `[3, 128, 128, 256, 256, 512, 512]`) and the
  width of its last up block and of `layer_up_last` (`64`). With the
  official values (--preset=official) nothing changes.
* The random draws inside the official forward passes are fixed, so that
  every call uses the fixture's inputs: in models/generator.py and
  models/models.py the name `torch` is bound to a stand-in that forwards
  every attribute to torch except `randn` (returns the fixture's z) and
  `randint` (returns the fixture's LabelMix bits, one per class present in
  the batch, in ascending class order as generate_labelmix visits them).
* CPU without DataParallel: options have gpu_ids = '-1', and the model is
  used directly instead of through put_on_multi_gpus (which on CPU makes
  the model its own submodule). train.py is a script that trains at import,
  so its loop body (zero_grad, forward, backward, optimiser step for G,
  then D, then the EMA update) is run here in the same order with the same
  calls.
* utils.update_EMA is called with an iteration number that runs no
  running-statistics pass over a data loader (the fixtures leave out the
  pass that train.py makes at iteration 0; docs/parity.md).
* Missing optional packages are stubbed with empty modules: torchvision
  (imported by models/vggloss.py, used only for the VGG loss, which is off)
  and matplotlib (imported by utils/utils.py for loss plots). With
  --no_spectral_norm the official models/norms.py misses `import torch`;
  it is added.
* The options namespace comes from the official config.add_all_arguments
  and config.set_dataset_default_lm (dataset defaults: lambda_labelmix,
  EMA_decay, lr_g); the fields that the official data sets set
  (dataloaders/*Dataset.py: sizes, class counts) are set here to the
  fixture's smaller values.

The label maps, images and z are made here (the official code reads them
from data sets): a coarse random 11x13 map of up to 12 "pool" classes
(0, 1 and random others), nearest-upsampled to HxW, then each pixel with
probability 2% set to a random pool class (isolated single pixels), and a
uniform image in [-1, 1]; the presets' seeds reproduce ../shared/parity/.
--init_from=DIR takes the inputs, the initial state dicts and the LabelMix
bits from an existing fixture instead, e.g. to remake it in float64 or to
check that this script reproduces it.

float64 (--dtype=float64): the networks are built and initialised in
float32 as in float32 runs (identical initial values), then converted with
`.double()`; inputs are cast; every array is saved in float64; no .pth
copies. float32 runs of the official code differ from its float64 run by
rounding, which at the official widths reaches ~1% on D-step arrays; a port
computing in float64 matches a float64 fixture to ~1e-10 of scale.
"""

import argparse
import copy
import datetime
import importlib
import json
import pathlib
import sys
import time
import types

import numpy as np
import torch

_OFFICIAL_D_CHANNELS = (3, 128, 128, 256, 256, 512, 512)

# Fields that the official data set classes set on the options
# (dataloaders/*Dataset.py, training phase).
_DATASETS = {
    'ade20k': dict(load_size=286, crop_size=256, semantic_nc=151,
                   aspect_ratio=1.0),
    'cityscapes': dict(load_size=512, crop_size=512, semantic_nc=35,
                       aspect_ratio=2.0),
    'coco': dict(load_size=286, crop_size=256, semantic_nc=183,
                 aspect_ratio=1.0),
}

_BASE = dict(dataset='ade20k', crop=64, semantic_nc=12, z_dim=8,
             channels_G=4, batch=2, param_free_norm='syncbatch',
             no_3dnoise=False, no_spectral_norm=False, no_balancing=False,
             no_labelmix=False, lambda_labelmix=None, ema_decay=None,
             lr_g=None, lr_d=None, d_channels=(3, 8, 8, 16, 16, 32, 32),
             d_last=8, spade_hidden=8, seeds=(0, 1, 5), pth=False,
             compact=False)

# None in lambda_labelmix, ema_decay, lr_g, lr_d: the official default of
# the data set. seeds: (model init, data, LabelMix). pth: which state dicts
# also get a .pth copy (True: all).
PRESETS = {
    # The three fixtures of ../shared/parity/.
    'tiny_square': dict(_BASE, pth=True),
    'tiny_wide': dict(_BASE, dataset='cityscapes', crop=128, semantic_nc=19,
                      z_dim=16, seeds=(1, 2, 5)),
    'tiny_variants': dict(_BASE, semantic_nc=10, param_free_norm='instance',
                          no_3dnoise=True, no_balancing=True,
                          seeds=(2, 3, 5)),
    # The fixture committed under tests/fixtures/parity/: about the smallest
    # sizes the official code runs (64x64 for the discriminator's six
    # poolings), with the official pattern of learned shortcuts, compact.
    'committed': dict(_BASE, semantic_nc=4, z_dim=2, channels_G=1, batch=1,
                      d_channels=(3, 2, 2, 4, 4, 8, 8), d_last=2,
                      spade_hidden=4, compact=True, pth=('D_step',)),
    # The official widths and class count of ADE20K at 64x64 (slow on CPU).
    'official': dict(_BASE, semantic_nc=151, z_dim=64, channels_G=64,
                     d_channels=_OFFICIAL_D_CHANNELS, d_last=64,
                     spade_hidden=128),
}

# Literal -> option replacements in the official sources (see docstring).
_WIDTH_PATCHES = {
    'models.norms': [('nhidden = 128', 'nhidden = opt.spade_hidden')],
    'models.discriminator': [
        ('self.channels = [3, 128, 128, 256, 256, 512, 512]',
         'self.channels = list(opt.d_channels)'),
        ('residual_block_D(2*self.channels[1], 64, opt, 1)',
         'residual_block_D(2*self.channels[1], opt.d_last_channels, opt, 1)'),
        ('nn.Conv2d(64, output_channel, 1, 1, 0)',
         'nn.Conv2d(opt.d_last_channels, output_channel, 1, 1, 0)'),
    ],
}

_NOTES = {
    'G_after_train_fwd_buffers': 'G SN u/v and BN running stats after ONE '
                                 'train-mode forward from G_init',
    'D_after_train_fwd_buffers': 'D SN u/v after ONE train-mode forward '
                                 '(D_real_train) from D_init',
    'G_grads': 'dLoss_G/dparam of the G step (keys = '
               'netG.named_parameters())',
    'D_grads': 'dLoss_D/dparam of the D step (keys = '
               'netD.named_parameters())',
}

# Arrays (file.array) and files equal to another one bit for bit by
# construction; a compact fixture stores only the target and lists these in
# meta.json's "aliases".
_ALIASES = {
    'outputs.D_real_eval_after_train_fwd': 'outputs.D_real_train',
    'outputs.D_fake_eval_after_train_fwd': 'outputs.D_fake_train',
    'outputs.labelmix_mask': 'inputs.labelmix_mask',
    'train_step.gstep_fake': 'outputs.G_train',
    'train_step.gstep_D_fake': 'outputs.D_fake_train',
    'train_step.labelmix_mask': 'inputs.labelmix_mask',
    'EMA_init': 'G_init',
}

_BUFFER_SUFFIXES = ('weight_u', 'weight_v', 'running_mean', 'running_var',
                    'num_batches_tracked')

# The fixture files in the order they are written and listed.
_FILE_ORDER = ('G_init', 'D_init', 'EMA_init', 'inputs', 'outputs',
               'G_after_train_fwd_buffers', 'D_after_train_fwd_buffers',
               'G_step', 'D_step', 'EMA_step', 'G_grads', 'D_grads',
               'train_step')


class _TorchWithFixedDraws(types.ModuleType):
  """Stands in for `torch` in an official module; fixes some draws."""

  def __init__(self, **draws):
    super().__init__('torch')
    self.__dict__.update(draws)

  def __getattr__(self, name):
    return getattr(torch, name)


def _stub_if_missing(name):
  try:
    importlib.import_module(name)
  except ImportError:
    sys.modules[name] = types.ModuleType(name)
    parent, _, child = name.rpartition('.')
    if parent:
      setattr(sys.modules[parent], child, sys.modules[name])


def load_official(root):
  """Imports the official modules from a checkout, widths made options."""
  root = pathlib.Path(root).resolve()
  if not (root / 'models' / 'models.py').exists():
    raise SystemExit(f'{root}: not a checkout of boschresearch/OASIS '
                     '(no models/models.py)')
  for name in ('torchvision', 'matplotlib', 'matplotlib.pyplot'):
    _stub_if_missing(name)
  sys.path.insert(0, str(root))
  mods = {}
  for name in ('config', 'utils.utils', 'models.norms',
               'models.discriminator', 'models.generator', 'models.losses',
               'models.models'):
    mods[name] = importlib.import_module(name)
    where = pathlib.Path(mods[name].__file__).resolve()
    if root not in where.parents:
      raise SystemExit(f'{name} was imported from {where}, not from {root}')
  for name, patches in _WIDTH_PATCHES.items():
    module = mods[name]
    source = pathlib.Path(module.__file__).read_text()
    for old, new in patches:
      if source.count(old) != 1:
        raise SystemExit(f'{module.__file__}: expected "{old}" once; is this '
                         'the official OASIS code?')
      source = source.replace(old, new)
    code = compile(source, module.__file__, 'exec')
    exec(code, module.__dict__)  # pylint: disable=exec-used
  if not hasattr(mods['models.norms'], 'torch'):
    mods['models.norms'].torch = torch
  return types.SimpleNamespace(
      config=mods['config'], utils=mods['utils.utils'],
      generator=mods['models.generator'], losses=mods['models.losses'],
      models=mods['models.models'])


def official_options(oasis, p, seed):
  """The official options namespace of a training run on CPU."""
  parser = argparse.ArgumentParser()
  oasis.config.add_all_arguments(parser, True)
  parser.add_argument('--phase', type=str, default='train')
  argv = ['--dataset_mode', p['dataset'], '--gpu_ids', '-1',
          '--seed', str(seed), '--batch_size', str(p['batch']),
          '--channels_G', str(p['channels_G']), '--z_dim', str(p['z_dim']),
          '--param_free_norm', p['param_free_norm']]
  for flag in ('no_3dnoise', 'no_spectral_norm', 'no_labelmix'):
    if p[flag]:
      argv.append('--' + flag)
  if p['no_balancing']:
    argv.append('--no_balancing_inloss')
  for key, flag in (('lambda_labelmix', 'lambda_labelmix'),
                    ('ema_decay', 'EMA_decay'), ('lr_g', 'lr_g'),
                    ('lr_d', 'lr_d')):
    if p[key] is not None:
      argv += ['--' + flag, str(p[key])]
  opt = parser.parse_args(argv)
  oasis.config.set_dataset_default_lm(opt, parser)
  opt = parser.parse_args(argv)
  opt.phase = 'train'
  opt.loaded_latest_iter = 0
  for k, v in _DATASETS[p['dataset']].items():
    setattr(opt, k, v)
  opt.cache_filelist_read = opt.cache_filelist_write = False
  opt.contain_dontcare_label = True
  opt.crop_size = p['crop']
  opt.semantic_nc = p['semantic_nc']
  opt.label_nc = p['semantic_nc'] - 1
  # The three widths that the patched official code reads from opt.
  opt.d_channels = list(p['d_channels'])
  opt.d_last_channels = p['d_last']
  opt.spade_hidden = p['spade_hidden']
  return opt


def image_hw(opt):
  return int(opt.crop_size / opt.aspect_ratio), opt.crop_size


def make_inputs(opt, seed):
  """Label map, image and z (numpy), drawn from one seeded generator."""
  g = torch.Generator().manual_seed(seed)
  b, c = opt.batch_size, opt.semantic_nc
  h, w = image_hw(opt)
  k = min(12, c)
  pool = torch.cat([torch.tensor([0, 1]),
                    torch.randperm(c - 2, generator=g)[:k - 2] + 2])
  coarse = torch.randint(0, k, (b, 11, 13), generator=g)
  rows, cols = torch.arange(h) * 11 // h, torch.arange(w) * 13 // w
  label = pool[coarse[:, rows][:, :, cols]][:, None]  # Nearest, floor.
  isolated = torch.rand(b, 1, h, w, generator=g) < 0.02
  label = torch.where(isolated,
                      pool[torch.randint(0, k, (b, 1, h, w), generator=g)],
                      label)
  image = torch.rand(b, 3, h, w, generator=g) * 2 - 1
  z = torch.randn(b, opt.z_dim, generator=g)
  return {'label_int': label.numpy(), 'image': image.numpy(),
          'z': z.numpy(), 'class_pool': pool.numpy()}


def labelmix_bits(label_int, seed):
  """One bit per class present, drawn as generate_labelmix does."""
  classes = np.unique(label_int)
  torch.manual_seed(seed)
  bits = [int(torch.randint(0, 2, (1,))) for _ in classes]
  return classes, np.array(bits, np.int64)


def _np(t):
  return t.detach().cpu().numpy().copy()  # Not a view of a live tensor.


def state(net):
  return {k: _np(v) for k, v in net.state_dict().items()}


def buffers(net):
  return {k: v for k, v in state(net).items()
          if k.endswith(_BUFFER_SUFFIXES)}


def grads(net):
  params = dict(net.named_parameters())
  return {k: _np(params[k].grad if params[k].grad is not None
                 else torch.zeros_like(params[k]))
          for k in net.state_dict() if k in params}


def drop_aliases(files):
  """Drops the arrays and files of _ALIASES that equal their target."""
  dropped = {}
  for alias, target in _ALIASES.items():
    (a_file, _, a_key), (t_file, _, t_key) = (alias.partition('.'),
                                              target.partition('.'))
    a = files.get(a_file, {}) if a_key else files
    t = files[t_file] if t_key else files
    a_key, t_key = a_key or a_file, t_key or t_file
    if a_key in a and _identical(a[a_key], t[t_key]):
      del a[a_key]
      dropped[alias] = target
  return dropped


def _identical(a, b):
  if isinstance(a, dict):
    return (list(a) == list(b)
            and all(_identical(a[k], b[k]) for k in a))
  return a.dtype == b.dtype and np.array_equal(a, b)


def _load(net, arrays, dtype):
  net.load_state_dict({k: torch.from_numpy(np.asarray(v)).to(
      dtype if np.asarray(v).dtype.kind == 'f' else None)
                       for k, v in arrays.items()})


class Recorder:
  """Records the official network calls and LabelMix masks."""

  def __init__(self, oasis, model):
    self.calls, self.masks = [], []
    self._handles = [
        model.netG.register_forward_hook(self._hook('G')),
        model.netD.register_forward_hook(self._hook('D'))]
    self._module = oasis.models
    self._original = oasis.models.generate_labelmix

    def recording(label, fake_image, real_image):
      mixed, mask = self._original(label, fake_image, real_image)
      self.masks.append(mask.detach().clone())
      return mixed, mask
    oasis.models.generate_labelmix = recording

  def _hook(self, name):
    def hook(module, inputs, output):
      del module
      self.calls.append((name, inputs[0].detach().clone(),
                         output.detach().clone()))
    return hook

  def close(self):
    for h in self._handles:
      h.remove()
    self._module.generate_labelmix = self._original


class FixedDraws:
  """Makes the official forwards draw the fixture's z and LabelMix bits."""

  def __init__(self, oasis, z, bits):
    self._z, self._bits, self._draws = z, bits, iter(())
    oasis.generator.torch = _TorchWithFixedDraws(randn=self._randn)
    oasis.models.torch = _TorchWithFixedDraws(randint=self._randint)

  def _randn(self, *size, dtype=None, device=None):
    del device
    z = self._z
    assert tuple(size) == tuple(z.shape), (size, z.shape)
    return z.to(dtype or z.dtype).clone()

  def _randint(self, low, high, size, device=None):
    del device
    assert (low, high, tuple(size)) == (0, 2, (1,))
    return torch.tensor([next(self._draws)])

  def expect_labelmix(self):
    """The next generate_labelmix call draws the fixture's bits."""
    self._draws = iter(self._bits.tolist())

  def check_all_drawn(self):
    if next(self._draws, None) is not None:
      raise RuntimeError('LabelMix drew fewer bits than classes')


def fixture_data(opt, init_from, seed_data, seed_labelmix):
  """Label map, image, z, LabelMix classes and bits: drawn or init_from's."""
  if init_from:
    with np.load(pathlib.Path(init_from) / 'inputs.npz') as f:
      given = {k: f[k] for k in f.files}
    data = {k: given[k] for k in ('label_int', 'image', 'class_pool')}
    if not opt.no_3dnoise:
      data['z'] = given['z']
    return data, given['labelmix_classes'], given['labelmix_bits']
  data = make_inputs(opt, seed_data)
  classes, bits = labelmix_bits(data['label_int'], seed_labelmix)
  return data, classes, bits


def torch_inputs(oasis, opt, data, tdtype):
  """The official preprocessing: image, one-hot label; z (None: no 3D noise)."""
  image, label = oasis.models.preprocess_input(opt, {
      'label': torch.from_numpy(data['label_int']),
      'image': torch.from_numpy(data['image'])})
  image, label = image.to(tdtype), label.to(tdtype)
  z = None if opt.no_3dnoise else torch.from_numpy(data['z']).to(tdtype)
  return image, label, z


def build_model(oasis, opt, seed_model, tdtype, init_from):
  """OASIS_model, built and initialised in float32 as the official code does."""
  oasis.utils.fix_seed(seed_model)
  model = oasis.models.OASIS_model(opt)
  model.to(tdtype)
  if init_from:
    src = pathlib.Path(init_from)
    inits = {n: dict(np.load(src / f'{n}.npz')) for n in ('G_init', 'D_init')}
    _load(model.netG, inits['G_init'], tdtype)
    _load(model.netD, inits['D_init'], tdtype)
    _load(model.netEMA, inits['G_init'], tdtype)
  model.train()
  return model


@torch.no_grad()
def single_forwards(oasis, model, image, label, draws):
  """Single calls from the initial state, each on a fresh copy.

  Returns the calls' outputs, and the G and D buffers after one train-mode
  forward.
  """
  g = copy.deepcopy(model.netG)
  g_train = g(label)
  g_buffers = buffers(g)
  g.eval()
  g_eval_after = g(label)
  g0 = copy.deepcopy(model.netG).eval()
  g_eval_init = g0(label)
  draws.expect_labelmix()
  mixed, mask = oasis.models.generate_labelmix(label, g_train, image)
  d_out = {}
  for which, x in (('real', image), ('fake', g_train), ('mixed', mixed)):
    d = copy.deepcopy(model.netD)
    d_out[which] = d(x)
    if which == 'real':
      d_buffers = buffers(d)
      d.eval()
      d_real_eval, d_fake_eval = d(image), d(g_train)
  calls = {
      'G_train': g_train, 'G_eval_init': g_eval_init,
      'G_eval_after_train_fwd': g_eval_after,
      'D_real_train': d_out['real'], 'D_fake_train': d_out['fake'],
      'D_mixed_train': d_out['mixed'],
      'D_real_eval_after_train_fwd': d_real_eval,
      'D_fake_eval_after_train_fwd': d_fake_eval,
      'mixed_image': mixed, 'labelmix_mask': mask,
  }
  return calls, g_buffers, d_buffers


@torch.no_grad()
def single_losses(oasis, opt, losses_computer, calls, label):
  """The single calls, then class balancing, targets and losses on them."""
  d_real, d_fake = calls['D_real_train'], calls['D_fake_train']
  lc = losses_computer
  loss_d_fake = lc.loss(d_fake, label, for_real=False)
  loss_d_real = lc.loss(d_real, label, for_real=True)
  loss_g_adv = lc.loss(d_fake, label, for_real=True)
  loss_lm_raw = lc.loss_labelmix(calls['labelmix_mask'],
                                 calls['D_mixed_train'], d_fake, d_real)
  lam = opt.lambda_labelmix
  return dict(calls, **{
      'weight_map': oasis.losses.get_class_balancing(opt, d_real, label),
      'target_real': oasis.losses.get_n1_target(opt, d_real, label, True),
      'target_fake': oasis.losses.get_n1_target(opt, d_real, label, False),
      'loss_D_fake': loss_d_fake, 'loss_D_real': loss_d_real,
      'loss_G_adv': loss_g_adv, 'loss_labelmix_raw': loss_lm_raw,
      'loss_labelmix': lam * loss_lm_raw,
      'loss_D_total': loss_d_fake + loss_d_real + lam * loss_lm_raw,
  })


def train_iteration(oasis, opt, model, losses_computer, image, label,
                    draws):
  """One iteration of train.py's loop body: G step, D step, EMA update.

  Returns its losses, the Recorder of its network calls, and the G and D
  gradients.
  """
  optimizer_g = torch.optim.Adam(model.netG.parameters(), lr=opt.lr_g,
                                 betas=(opt.beta1, opt.beta2))
  optimizer_d = torch.optim.Adam(model.netD.parameters(), lr=opt.lr_d,
                                 betas=(opt.beta1, opt.beta2))
  rec = Recorder(oasis, model)
  model.netG.zero_grad()
  loss_g, losses_g = model(image, label, 'losses_G', losses_computer)
  loss_g.backward()
  g_grads = grads(model.netG)
  optimizer_g.step()
  model.netD.zero_grad()
  draws.expect_labelmix()
  loss_d, losses_d = model(image, label, 'losses_D', losses_computer)
  loss_d.backward()
  d_grads = grads(model.netD)
  optimizer_d.step()
  if not opt.no_EMA:
    oasis.utils.update_EMA(types.SimpleNamespace(module=model), 1, None, opt)
  rec.close()
  draws.check_all_drawn()
  order = [c[0] for c in rec.calls]
  want = ['G', 'D', 'G'] + ['D'] * (2 if opt.no_labelmix else 3)
  if order != want:
    raise RuntimeError(f'official calls {order}, expected {want}')
  losses = {
      'loss_G': loss_g, 'loss_G_adv': losses_g[0], 'loss_D': loss_d,
      'loss_D_fake': losses_d[0], 'loss_D_real': losses_d[1],
  }
  if not opt.no_labelmix:
    losses['loss_D_labelmix'] = losses_d[2]
  return losses, rec, g_grads, d_grads


def train_step_arrays(opt, model, losses, rec, label):
  """The iteration's losses and network calls, eval-mode outputs after it."""
  (_, _, gstep_fake), (_, _, gstep_d_fake), (_, _, dstep_fake) = rec.calls[:3]
  step = dict(losses)
  step.update({'gstep_fake': gstep_fake, 'gstep_D_fake': gstep_d_fake,
               'dstep_fake': dstep_fake, 'dstep_D_fake': rec.calls[3][2],
               'dstep_D_real': rec.calls[4][2]})
  if not opt.no_labelmix:
    step.update({'dstep_D_mixed': rec.calls[5][2],
                 'dstep_mixed_image': rec.calls[5][1],
                 'labelmix_mask': rec.masks[0]})
  with torch.no_grad():
    step['G_eval_after_step'] = copy.deepcopy(model.netG).eval()(label)
    if not opt.no_EMA:
      step['EMA_eval_after_step'] = copy.deepcopy(model.netEMA).eval()(label)
  return step


def input_arrays(data, label, image, z, mask, classes, bits):
  """The inputs file: label map, one-hot map, image, z, LabelMix draws."""
  inputs = {'label_int': data['label_int'],
            'label_onehot': _np(label), 'image': _np(image)}
  if z is not None:
    inputs['z'] = _np(z)
  inputs.update({'labelmix_mask': _np(mask),
                 'labelmix_classes': np.asarray(classes, np.int64),
                 'labelmix_bits': np.asarray(bits, np.int64),
                 'class_pool': np.asarray(data['class_pool'], np.int64)})
  return inputs


def labelmix_meta(semantic_nc, inputs):
  """meta.json's LabelMix classes and bits, and the pixels of the mask that
  differ from the bit of their class."""
  classes, bits = inputs['labelmix_classes'], inputs['labelmix_bits']
  per_class = np.zeros(semantic_nc, np.float64)
  per_class[classes] = bits
  quirk = int((per_class[inputs['label_int']] != inputs['labelmix_mask'])
              .sum())
  return {'classes': np.asarray(classes).tolist(),
          'bits': np.asarray(bits).tolist(), 'quirk_pixels': quirk}


def run_official(oasis, p, opt, tdtype, init_from):
  """Runs the official code; returns the fixture's arrays by file, and the
  model."""
  seed_model, seed_data, seed_labelmix = p['seeds']
  data, classes, bits = fixture_data(opt, init_from, seed_data, seed_labelmix)
  image, label, z = torch_inputs(oasis, opt, data, tdtype)
  draws = FixedDraws(oasis, z, bits)
  model = build_model(oasis, opt, seed_model, tdtype, init_from)
  losses_computer = oasis.losses.losses_computer(opt)
  files = {'G_init': state(model.netG), 'D_init': state(model.netD),
           'EMA_init': state(model.netEMA)}
  calls, g_buffers, d_buffers = single_forwards(oasis, model, image, label,
                                                draws)
  files['G_after_train_fwd_buffers'] = g_buffers
  files['D_after_train_fwd_buffers'] = d_buffers
  outputs = single_losses(oasis, opt, losses_computer, calls, label)
  losses, rec, files['G_grads'], files['D_grads'] = train_iteration(
      oasis, opt, model, losses_computer, image, label, draws)
  step = train_step_arrays(opt, model, losses, rec, label)
  files['G_step'], files['D_step'] = state(model.netG), state(model.netD)
  if not opt.no_EMA:
    files['EMA_step'] = state(model.netEMA)
  files['inputs'] = input_arrays(data, label, image, z,
                                 calls['labelmix_mask'], classes, bits)
  files['outputs'] = {k: _np(v) for k, v in outputs.items()}
  files['train_step'] = {k: _np(v) for k, v in step.items()}
  return files, model


def prepare_out_dir(out):
  """The fixture directory, made, or emptied of an earlier fixture."""
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  if (out / 'meta.json').exists():  # Remake a fixture: no stale files.
    for f in [*out.glob('*.npz'), *out.glob('*.pth'), out / 'meta.json']:
      f.unlink()
  elif any(out.iterdir()):
    raise SystemExit(f'{out} is not empty and holds no fixture')
  return out


def write_pth(path, net, arrays):
  """Saves arrays as a state dict of net, with PyTorch's module versions
  (spectral norm's hook version)."""
  sd = net.state_dict()
  sd = type(sd)((k, torch.from_numpy(v)) for k, v in arrays.items())
  sd._metadata = net.state_dict()._metadata  # pylint: disable=W0212
  torch.save(sd, path)


def write_arrays(out, files, model, p, dtype):
  """Writes the .npz files and .pth copies; returns meta.json's listing."""
  save = np.savez_compressed if p['compact'] else np.savez
  listing = {}
  for key in _FILE_ORDER:
    if key not in files:
      continue
    arrays = files[key]
    save(out / f'{key}.npz', **arrays)
    names = [f'{key}.npz']
    entry = {}
    if key.endswith(('_init', '_step')) and key != 'train_step':
      net = {'G': model.netG, 'D': model.netD, 'E': model.netEMA}[key[0]]
      pth = p['pth'] if p['pth'] in (True, False) else key in p['pth']
      if pth and dtype == 'float32':
        write_pth(out / f'{key}.pth', net, arrays)
        names.insert(0, f'{key}.pth')
      entry = {'num_keys': len(arrays),
               'num_elements': int(sum(np.size(v) for v in arrays.values()))}
    if key in _NOTES:
      entry['note'] = _NOTES[key]
    listing[key] = dict(files=names, **entry, arrays={
        k: {'shape': list(np.shape(v)), 'dtype': str(np.asarray(v).dtype)}
        for k, v in arrays.items()})
  return listing


def run_meta(name, dtype):
  """meta.json's first fields: the fixture and the software that made it."""
  return {
      'name': name,
      'created': datetime.datetime.now(datetime.timezone.utc).strftime(
          '%Y-%m-%d %H:%M:%S UTC'),
      'torch_version': torch.__version__, 'numpy_version': np.__version__,
      'num_threads': torch.get_num_threads(), 'dtype': dtype,
      'device': 'cpu',
  }


def network_meta(opt, model):
  """meta.json's configuration of the networks, losses and optimisers."""
  norm = model.netG.body[0].norm_0.first_norm
  h, w = image_hw(opt)
  return {
      'dataset_mode': opt.dataset_mode,
      'semantic_nc': opt.semantic_nc, 'label_nc': opt.label_nc,
      'contain_dontcare_label': opt.contain_dontcare_label,
      'z_dim': opt.z_dim, 'use_3d_noise': not opt.no_3dnoise,
      'channels_G': opt.channels_G, 'g_channels': model.netG.channels,
      'latent_hw': list(model.netG.compute_latent_vector_size(opt)),
      'spade_hidden': opt.spade_hidden, 'spade_ks': opt.spade_ks,
      'param_free_norm': opt.param_free_norm,
      'norm_class': type(norm).__name__, 'norm_eps': norm.eps,
      'norm_momentum': norm.momentum if norm.track_running_stats else None,
      'norm_tracks_running_stats': norm.track_running_stats,
      'd_channels': list(opt.d_channels),
      'd_last_channels': opt.d_last_channels,
      'd_output_channels': opt.semantic_nc + 1,
      'crop_size': opt.crop_size, 'aspect_ratio': opt.aspect_ratio,
      'image_hw': [h, w], 'num_res_blocks': opt.num_res_blocks,
      'use_spectral_norm': not opt.no_spectral_norm,
      'spectral_norm_eps': 1e-12, 'spectral_norm_power_iterations': 1,
      'use_class_balancing': not opt.no_balancing_inloss,
      'use_labelmix': not opt.no_labelmix,
      'lambda_labelmix': opt.lambda_labelmix, 'use_ema': not opt.no_EMA,
      'ema_decay': opt.EMA_decay, 'lr_g': opt.lr_g, 'lr_d': opt.lr_d,
      'beta1': opt.beta1, 'beta2': opt.beta2, 'adam_eps': 1e-8,
      'batch_size': opt.batch_size,
  }


def options_meta(p, dtype, init_from, opt, model):
  """meta.json's arguments, seeds, official options and parameter counts."""
  seed_model, seed_data, seed_labelmix = p['seeds']
  return {
      'args': dict(p, dtype=dtype,
                   init_from=str(init_from) if init_from else None),
      'seeds': {'model_init': seed_model, 'data': seed_data,
                'labelmix': seed_labelmix},
      'discriminator_channels': list(opt.d_channels),
      'official_sizes_changed': {
          k: v for k, v, official in (
              ('d_channels', list(opt.d_channels),
               list(_OFFICIAL_D_CHANNELS)),
              ('d_last_channels', opt.d_last_channels, 64),
              ('spade_hidden', opt.spade_hidden, 128)) if v != official},
      'opt': {k: v for k, v in sorted(vars(opt).items())},
      'param_counts': {
          'G': sum(x.numel() for x in model.netG.parameters()),
          'D': sum(x.numel() for x in model.netD.parameters())},
  }


def loss_scalars(files):
  """meta.json's scalars: the losses of outputs and train_step."""
  scalars = {k: float(v) for k, v in files['outputs'].items()
             if k.startswith('loss')}
  scalars.update({f'train_step.{k}': float(v)
                  for k, v in files['train_step'].items()
                  if k.startswith('loss')})
  return scalars


def make_fixture(oasis, p, out, dtype='float32', init_from=None, threads=2,
                 name=None):
  """Runs the official code and writes one fixture directory."""
  start = time.time()
  torch.set_num_threads(threads)
  torch.use_deterministic_algorithms(True)
  tdtype = {'float32': torch.float32, 'float64': torch.float64}[dtype]
  opt = official_options(oasis, p, p['seeds'][0])
  files, model = run_official(oasis, p, opt, tdtype, init_from)
  labelmix = labelmix_meta(opt.semantic_nc, files['inputs'])

  out = prepare_out_dir(out)
  aliases = drop_aliases(files) if p['compact'] else {}
  listing = write_arrays(out, files, model, p, dtype)
  meta = run_meta(name or out.name, dtype)
  meta.update(network_meta(opt, model))
  meta.update(options_meta(p, dtype, init_from, opt, model))
  meta.update(scalars=loss_scalars(files), labelmix=labelmix,
              files=listing, aliases=aliases,
              seconds=round(time.time() - start, 1))
  if p['compact']:  # The arrays' names, shapes and dtypes are in the files.
    del meta['files']
  (out / 'meta.json').write_text(
      json.dumps(meta, indent=None if p['compact'] else 1) + '\n')
  return meta


def main(argv=None):
  parser = argparse.ArgumentParser(
      description=__doc__.splitlines()[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--oasis', required=True,
                      help='checkout of github.com/boschresearch/OASIS')
  parser.add_argument('--out', required=True, help='fixture directory')
  parser.add_argument('--preset', default='tiny_square',
                      choices=sorted(PRESETS))
  parser.add_argument('--dtype', default='float32',
                      choices=['float32', 'float64'])
  parser.add_argument('--init_from', default=None,
                      help='fixture whose inputs, initial state dicts and '
                      'LabelMix bits to use')
  parser.add_argument('--threads', type=int, default=2)
  parser.add_argument('--no_pth', action='store_true',
                      help='no .pth copies of the state dicts')
  args = parser.parse_args(argv)
  preset = dict(PRESETS[args.preset], preset=args.preset)
  if args.no_pth:
    preset['pth'] = False
  oasis = load_official(args.oasis)
  meta = make_fixture(oasis, preset, args.out, dtype=args.dtype,
                      init_from=args.init_from, threads=args.threads)
  print(f"{args.out}: {meta['name']} {meta['dtype']}, "
        f"{meta['param_counts']}, {meta['seconds']} s")


if __name__ == '__main__':
  main()
