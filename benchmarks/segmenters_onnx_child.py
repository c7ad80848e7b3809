"""Peak RSS of the ONNX route segmenting one batch, in a fresh process.

  python -m benchmarks.segmenters_onnx_child --models=A.onnx[,B.onnx] \
      --batch_size=8 [--threads=0]

Started by `benchmarks.segmenters --onnx` with the models it exported (one
per size the protocol's network sees); imports only numpy and onnxruntime,
so that its RSS is the route's own. Prints one JSON line: the peak RSS after
the imports, after creating the sessions, and after one call per model on a
batch of random ImageNet-normalised images (then the argmax), in MiB.
"""

import json
import os
import resource

from absl import app
from absl import flags
import numpy as np
import onnxruntime


def peak_rss_mib() -> float:
  """This process's peak RSS in MiB: Linux's VmHWM, which exec resets
  (`ru_maxrss` carries the parent's peak over into a started child)."""
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith('VmHWM:'):
          return int(line.split()[1]) / 1024  # kB.
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def session(model, threads: int = 0) -> onnxruntime.InferenceSession:
  """A CPU session (a path or the model's bytes) with `threads` intra-op
  threads (0: the core count)."""
  options = onnxruntime.SessionOptions()
  options.intra_op_num_threads = threads or os.cpu_count()
  return onnxruntime.InferenceSession(model, options,
                                      providers=['CPUExecutionProvider'])


def main(argv) -> None:
  del argv
  f = flags.FLAGS
  imports = peak_rss_mib()
  sessions = [session(p, f.threads) for p in f.models]
  ready = peak_rss_mib()
  rng = np.random.default_rng(0)
  for s in sessions:
    _, c, h, w = s.get_inputs()[0].shape
    x = rng.standard_normal((f.batch_size, c, h, w), np.float32)
    s.run(['scores'], {'images': x})[0].argmax(1)
  print(json.dumps({'rss_after_imports_mib': imports,
                    'rss_after_setup_mib': ready,
                    'peak_rss_mib': peak_rss_mib()}))


if __name__ == '__main__':
  flags.DEFINE_list('models', None, 'The .onnx files, one per size.')
  flags.DEFINE_integer('batch_size', 8, 'Images per call.')
  flags.DEFINE_integer('threads', 0, 'Intra-op threads (0: the cores).')
  flags.mark_flag_as_required('models')
  app.run(main)
