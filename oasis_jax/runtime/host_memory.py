"""Host memory: returning the heap that XLA's compiler freed to the OS.

The process environment (e.g. huge-page malloc) is set by scripts/launch.sh,
not here: the library never re-executes or re-configures its own process.
"""

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    return libc.malloc_trim
  except (OSError, AttributeError):  # Not glibc (macOS, musl): nothing to do.
    return None


def trim_heap() -> bool:
  """Hands the heap pages freed so far back to the OS (glibc's malloc_trim).

  XLA's compiler allocates and frees gigabytes of small objects for a large
  program; glibc keeps those pages, so without this the process carries
  the compiler's peak (2.4 GB for the 256x256 training step) on top of
  the step's own buffers. Returns whether memory was released.
  """
  trim = _malloc_trim()
  return bool(trim(0)) if trim is not None else False
