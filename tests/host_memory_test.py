"""host_memory: trim_heap hands freed heap pages back to the OS."""

import ctypes.util
import sys

from absl.testing import absltest

from oasis_jax.runtime import host_memory

def _rss_kib() -> int:
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('VmRSS:'):
        return int(line.split()[1])
  raise RuntimeError('no VmRSS in /proc/self/status')


class TrimHeapTest(absltest.TestCase):

  @absltest.skipUnless(sys.platform.startswith('linux')
                       and ctypes.util.find_library('c'),
                       'needs Linux with glibc (malloc_trim, /proc)')
  def test_freed_small_allocations_leave_the_resident_set(self):
    # 200 MB of 2 kB objects: malloc's heap, which free() alone keeps.
    # A live object after each keeps the heap's top in use, as the
    # compiler's survivors do, so only trimming releases the pages.
    blocks = [(bytes(2000), bytearray(16)) for _ in range(100_000)]
    keep = [pair[1] for pair in blocks[::50]]
    del blocks
    before = _rss_kib()
    self.assertTrue(host_memory.trim_heap())
    self.assertGreater(before - _rss_kib(), 100_000)  # > 100 MB released.
    del keep


if __name__ == '__main__':
  absltest.main()
