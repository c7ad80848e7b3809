"""The one table of formulations: which kernel computes what, from config.perf.

`models/` computes the reference formulation unless given others; this
module is where the resolved `config.perf.conv_impl` and `label_conv` become
the callables injected into its modules (and `make_generator` /
`make_discriminator` build the networks with them). 'auto' is resolved here
only for a config that was not resolved yet (tests, notebooks); the entry
points resolve once at start-up (config/resolution.py).
"""

from oasis_jax.config import resolution
from oasis_jax import models
from oasis_jax.kernels import conv as conv_kernels
from oasis_jax.kernels import fused_forwards
from oasis_jax.kernels import label_conv as label_conv_kernels
from oasis_jax.kernels import spade_eval
from oasis_jax.models import layers
from oasis_jax.models import model_config

# config.perf.label_conv -> the label conv's formulation.
LABEL_CONVS = {
    'dense': layers.dense_label_conv,
    'gather': label_conv_kernels.GatherLabelConv(matmul_grad=False),
    'gather_matmul': label_conv_kernels.GatherLabelConv(matmul_grad=True),
}
# config.perf.conv_impl -> the convolutions' formulations.
_CONV_IMPLS = {
    'xla': {},
    'cpu': {'conv': conv_kernels.spectral_conv,
            'upsample_conv': conv_kernels.upsample_spectral_conv,
            'res_block': spade_eval.FusedEvalResBlock},
}


def formulations(config, forwards: int = 1) -> model_config.Formulations:
  """The formulations config.perf.conv_impl and label_conv select; with
  ``forwards`` > 1, the discriminator's for that many consecutive forwards
  on a batch of as many equal chunks (kernels/fused_forwards.py)."""
  perf = config.perf
  if (perf.conv_impl not in _CONV_IMPLS or
      perf.label_conv not in LABEL_CONVS):  # 'auto', or a bad value named.
    perf = resolution.resolve(config).perf
  f = model_config.Formulations(label_conv=LABEL_CONVS[perf.label_conv],
                                **_CONV_IMPLS[perf.conv_impl])
  return f if forwards == 1 else fused_forwards.formulations(f, forwards)


def make_generator(config):
  """models.make_generator with the formulations config.perf selects."""
  return models.make_generator(config, formulations(config))


def make_discriminator(config, forwards: int = 1):
  """models.make_discriminator with the formulations config.perf selects
  (for ``forwards`` consecutive forwards per call, see formulations)."""
  return models.make_discriminator(config, formulations(config, forwards))
