"""Official OASIS weights as an inference checkpoint (command line).

  python -m oasis_jax.convert_torch --config=configs/ade20k.py \
      --generator=G.pth [--ema=EMA.pth] [--discriminator=D.pth] --out=DIR

checks the official ``.pth`` (or ``.npz``) files against the model the config
describes and writes an inference checkpoint
(``export_format.save_inference``); the key mapping is
``pretrained/oasis.py``.
"""

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from oasis_jax.pretrained import oasis
from oasis_jax.inference import export_format
from oasis_jax.training import train_state


def convert_official(config, generator: str, ema: str = '',
                     discriminator: str = ''):
  """Converts official .pth/.npz files, checked against the config's model.

  Returns:
    {'generator': ..., ['ema': ...], ['discriminator': ...]} variables.
  """
  (g_p, g_s), (d_p, d_s) = jax.eval_shape(
      lambda: train_state.init_variables(config, jax.random.PRNGKey(0)))
  g_expected = {'params': g_p, 'batch_stats': g_s}
  out = {'generator': oasis.convert_file(generator, g_expected)}
  if ema:
    out['ema'] = oasis.convert_file(ema, g_expected)
  if discriminator:
    out['discriminator'] = oasis.convert_file(
        discriminator, {'params': d_p, 'batch_stats': d_s})
  return out


def main(argv):
  del argv
  f = flags.FLAGS
  config = _CONFIG.value
  converted = convert_official(config, f.generator, f.ema, f.discriminator)
  kind = 'ema' if 'ema' in converted else 'generator'
  path = export_format.save_inference(
      f.out, config, converted[kind],
      discriminator=converted.get('discriminator'), generator_kind=kind,
      source=f'official weights: {f.ema or f.generator}')
  print(f'wrote the inference checkpoint {path} (generator: {kind}'
        f"{', with discriminator' if f.discriminator else ''})")


if __name__ == '__main__':
  _CONFIG = config_flags.DEFINE_config_file(
      'config', None, 'Model config (sizes must match the weights).',
      lock_config=True)
  flags.DEFINE_string('generator', None, 'Official *_G.pth (or .npz).')
  flags.DEFINE_string('ema', '', 'Official *_EMA.pth (or .npz).')
  flags.DEFINE_string('discriminator', '', 'Official *_D.pth (or .npz).')
  flags.DEFINE_string('out', None, 'Output inference checkpoint directory.')
  flags.mark_flags_as_required(['config', 'generator', 'out'])
  app.run(main)
