"""Benchmark of the mIoU segmenters at their protocols' sizes: Flax and ONNX.

  python -m benchmarks.segmenters [--protocols=cityscapes/drn,...] \
      [--batch_size=1] [--dtype=float32] [--warmup=1] [--runs=5] \
      [--onnx] [--onnx_threads=0] [--memory_batch_size=8]

For each protocol: random weights (speed does not depend on them), images of
the data set's generated size, `protocol.predict` jitted; compile time apart,
then the median of --runs timed calls after --warmup. Its columns:
images_per_s, s_per_batch, compile_s, flops_per_image (XLA's estimate of the
lowered program) and peak_memory_mib (accelerator; CPU: the process's peak
RSS so far, cumulative over the protocols).

--onnx (default on; needs the test extra's onnx and onnxruntime): the same
network with the same weights exported (`segmenters.onnx_export`) and run by
onnxruntime (--onnx_threads intra-op threads, 0: the core count) on the same
random 8-bit images at each size the network sees, against the Flax forward
that the graph reproduces (`onnx_export.reference_scores`, jitted, float32):
`flax_*` and `onnx_*` images/s (median of --runs after --warmup), the Flax
compile and the ONNX export and session-creation seconds apart, and the
largest absolute difference of their scores with the share of pixels whose
argmax agrees.

--memory_batch_size=N (0: off): segmenting N images (that forward, then the
argmax) once per route, each in a fresh process, so that no other network's
or route's peak hides it: the process's peak RSS after its imports, after
setting up (Flax: variables on the device and the program compiled; ONNX:
sessions created) and after the call; for Flax also XLA's
`memory_analysis()` of the compiled program (arguments + outputs +
temporaries, what the device must hold during the call).
"""

import functools
import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from benchmarks import segmenters_onnx_child
from oasis_jax.evaluation.segmenters import networks
from oasis_jax.evaluation.segmenters import onnx_export
from oasis_jax.evaluation.segmenters import protocol as protocol_lib

# Protocol -> the generated image size (height, width) of its data set.
SIZES = {'cityscapes/drn': (256, 512), 'ade20k/single_scale': (256, 256),
         'ade20k/csail_multiscale': (256, 256),
         'coco_stuff/deeplab_msc': (256, 256),
         'coco_stuff/imaginaire': (256, 256)}
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PROTOCOLS = flags.DEFINE_list(
    'protocols', ['cityscapes/drn', 'ade20k/single_scale',
                  'coco_stuff/deeplab_msc'], f'Some of {sorted(SIZES)}.')
_BATCH = flags.DEFINE_integer('batch_size', 1, 'Images per call.')
_DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'],
                           'The segmenter\'s compute dtype (`predict` only; '
                           'the Flax-ONNX comparison is float32).')
_WARMUP = flags.DEFINE_integer('warmup', 1, 'Untimed calls.')
_RUNS = flags.DEFINE_integer('runs', 5, 'Timed calls (median).')
_ONNX = flags.DEFINE_bool('onnx', True, 'Compare with the exported network '
                          'in onnxruntime.')
_ONNX_THREADS = flags.DEFINE_integer(
    'onnx_threads', 0, 'onnxruntime intra-op threads (0: the core count).')
_MEMORY_BATCH = flags.DEFINE_integer(
    'memory_batch_size', 8, 'Peak memory of segmenting this many images, '
    'per route in a fresh process (0: not measured).')
_MEMORY_CHILD = flags.DEFINE_string(
    'memory_child', '', 'Internal: the Flax route\'s memory process, given '
    'the variables .npz; runs the first of --protocols.')


def _random_variables(protocol: protocol_lib.Protocol):
  model = networks.get(protocol.network).make(protocol.num_classes)
  return jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))


def _random_pixels(protocol, hw, batch_size: int) -> list[np.ndarray]:
  """Random 8-bit images (float 0..255) at each size the network sees."""
  rng = np.random.default_rng(0)
  return [rng.integers(0, 256, (batch_size, *s, 3)).astype(np.float32)
          for s in protocol_lib.input_sizes(protocol, hw)]


def _scores(protocol, variables, pixels: list):
  """The exported graphs' computation in Flax, one [B, h, w, C] per size."""
  return [onnx_export.reference_scores(protocol, variables, p) for p in pixels]


def _segment(protocol, variables, pixels: list):
  return [jnp.argmax(s, -1) for s in _scores(protocol, variables, pixels)]


def measure(protocol, variables, hw, batch_size: int, dtype, warmup: int,
            runs: int) -> dict:
  """`protocol.predict`: images/s and the rest (the module docstring)."""
  images = jnp.asarray(np.random.default_rng(0).uniform(
      -1, 1, (batch_size, *hw, 3)), jnp.float32)
  fn = jax.jit(functools.partial(protocol_lib.predict, protocol,
                                 dtype=dtype))
  compiled, compile_s, _ = common.compile_with_cost(fn, variables, images)
  flops = common.lowered_flops(fn, variables, images)
  median, _ = common.time_compiled(lambda: compiled(variables, images),
                                   warmup, runs)
  return {'protocol': protocol.name, 'network': protocol.network,
          'image_hw': list(hw), 'batch_size': batch_size,
          'dtype': jnp.dtype(dtype).name, 'images_per_s': batch_size / median,
          's_per_batch': median, 'compile_s': compile_s,
          'flops_per_image': flops / batch_size if flops else None,
          'device': jax.devices()[0].device_kind,
          **common.peak_memory()}


def compare_onnx(protocol, variables, hw, batch_size: int, warmup: int,
                 runs: int, threads: int) -> tuple[dict, list]:
  """Flax against onnxruntime on the same images; (row, exported models)."""
  pixels = _random_pixels(protocol, hw, batch_size)
  fn = jax.jit(functools.partial(_scores, protocol))
  compiled, compile_s, _ = common.compile_with_cost(fn, variables, pixels)
  flax_s, _ = common.time_compiled(lambda: compiled(variables, pixels),
                                   warmup, runs)
  t0 = time.perf_counter()
  models = [onnx_export.export(protocol, variables, p.shape[1:3])
            for p in pixels]
  export_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  sessions = [segmenters_onnx_child.session(m.SerializeToString(), threads)
              for m in models]
  session_s = time.perf_counter() - t0
  inputs = [onnx_export.onnx_input(p) for p in pixels]

  def run_onnx():
    return [s.run(['scores'], {'images': x})[0]
            for s, x in zip(sessions, inputs)]

  onnx_s, _ = common.time_compiled(run_onnx, warmup, runs)
  ref = [np.asarray(o) for o in compiled(variables, pixels)]
  got = [o.transpose(0, 2, 3, 1) for o in run_onnx()]
  return {
      'flax_images_per_s': batch_size / flax_s,
      'flax_compile_s': compile_s,
      'onnx_images_per_s': batch_size / onnx_s,
      'onnx_export_s': export_s, 'onnx_session_s': session_s,
      'onnx_threads': threads or os.cpu_count(),
      'max_abs_score_diff': max(float(np.abs(a - b).max())
                                for a, b in zip(ref, got)),
      'max_abs_score': max(float(np.abs(a).max()) for a in ref),
      'argmax_agreement': float(np.mean(np.concatenate([
          (a.argmax(-1) == b.argmax(-1)).ravel() for a, b in zip(ref, got)]))),
  }, models


def _run_child(args: list[str]) -> dict:
  """A fresh `python -m ...` process's JSON line (its last)."""
  out = subprocess.run([sys.executable, '-m', *args], cwd=_ROOT, check=True,
                       capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def memory(protocol, variables, models: list, batch_size: int,
           threads: int) -> dict:
  """Peak memory of each route on `batch_size` images (module docstring)."""
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, 'variables.npz')
    np.savez(path, **traverse_util.flatten_dict(
        jax.device_get(variables), sep='/'))
    row = {f'memory_flax_{k}': v for k, v in _run_child([
        'benchmarks.segmenters', f'--memory_child={path}',
        f'--protocols={protocol.name}',
        f'--memory_batch_size={batch_size}']).items()}
    paths = []
    for i, m in enumerate(models):
      paths.append(os.path.join(tmp, f'{i}.onnx'))
      with open(paths[-1], 'wb') as f:
        f.write(m.SerializeToString())
    if paths:
      row.update({f'memory_onnx_{k}': v for k, v in _run_child([
          'benchmarks.segmenters_onnx_child', f'--models={",".join(paths)}',
          f'--batch_size={batch_size}', f'--threads={threads}']).items()})
  return {'memory_batch_size': batch_size, **row}


def flax_memory_child(name: str, path: str, batch_size: int) -> dict:
  """The Flax route's memory process (`memory`): its JSON line."""
  imports = segmenters_onnx_child.peak_rss_mib()
  protocol = protocol_lib.get(*name.split('/'))
  with np.load(path) as f:
    variables = jax.device_put(traverse_util.unflatten_dict(
        dict(f.items()), sep='/'))
  pixels = _random_pixels(protocol, SIZES[name], batch_size)
  compiled = jax.jit(functools.partial(_segment, protocol)).lower(
      variables, pixels).compile()
  stats = compiled.memory_analysis()
  ready = segmenters_onnx_child.peak_rss_mib()
  jax.block_until_ready(compiled(variables, pixels))
  return {'rss_after_imports_mib': imports, 'rss_after_setup_mib': ready,
          'peak_rss_mib': segmenters_onnx_child.peak_rss_mib(),
          'xla_argument_mib': stats.argument_size_in_bytes / 2**20,
          'xla_output_mib': stats.output_size_in_bytes / 2**20,
          'xla_temp_mib': stats.temp_size_in_bytes / 2**20,
          'xla_total_mib': (stats.argument_size_in_bytes
                            + stats.output_size_in_bytes
                            + stats.temp_size_in_bytes
                            - stats.alias_size_in_bytes) / 2**20}


def run(name: str) -> dict:
  """Every measurement the flags ask for, of one protocol."""
  protocol = protocol_lib.get(*name.split('/'))
  hw, variables = SIZES[name], _random_variables(protocol)
  row = measure(protocol, variables, hw, _BATCH.value,
                jnp.dtype(_DTYPE.value), _WARMUP.value, _RUNS.value)
  models = []
  if _ONNX.value:
    onnx_row, models = compare_onnx(protocol, variables, hw, _BATCH.value,
                                    _WARMUP.value, _RUNS.value,
                                    _ONNX_THREADS.value)
    row.update(onnx_row)
  if _MEMORY_BATCH.value:
    row.update(memory(protocol, variables, models, _MEMORY_BATCH.value,
                      _ONNX_THREADS.value))
  return row


def main(argv):
  del argv
  if _MEMORY_CHILD.value:
    common.print_json(flax_memory_child(
        _PROTOCOLS.value[0], _MEMORY_CHILD.value, _MEMORY_BATCH.value))
    return
  results = []
  for name in _PROTOCOLS.value:
    results.append(run(name))
    common.print_table([(k, str(v)) for k, v in results[-1].items()])
    print(flush=True)
  common.print_json({'segmenters': results})


if __name__ == '__main__':
  app.run(main)
