"""host_memory: trim_heap hands freed heap pages back to the OS; the
huge-page relaunch of the entry points."""

import ctypes.util
import os
import subprocess
import sys

from absl.testing import absltest

from oasis_jax import host_memory

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


class HugePageEnvironmentTest(absltest.TestCase):

  def test_adds_the_tunable_where_it_helps(self):
    env = host_memory.huge_page_environment({'PATH': '/bin'}, (2, 36),
                                            'madvise')
    self.assertEqual(env, {'PATH': '/bin',
                           'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'})
    env = host_memory.huge_page_environment(
        {'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'}, (2, 35), 'madvise')
    self.assertEqual(env['GLIBC_TUNABLES'],
                     'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1')

  def test_nothing_to_do(self):
    cases = [
        ({}, (2, 34), 'madvise'),  # glibc without the tunable.
        ({}, None, 'madvise'),  # Not glibc.
        ({}, (2, 36), 'always'),  # The kernel needs no advice.
        ({}, (2, 36), 'never'),
        ({}, (2, 36), None),  # No THP (not Linux, or not built in).
        ({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}, (2, 36), 'madvise'),
        ({'OASIS_JAX_HUGE_PAGES': '0'}, (2, 36), 'madvise'),
    ]
    for environ, version, mode in cases:
      with self.subTest(environ=environ, version=version, mode=mode):
        self.assertIsNone(host_memory.huge_page_environment(
            environ, version, mode))


# Run by the test below: relaunches itself, then counts the page faults of
# touching a fresh 64 MiB malloc block (glibc maps it; huge pages or not).
_SCRIPT = r'''
import ctypes, ctypes.util, os, resource, sys
sys.path.insert(0, sys.argv[1])
print('start', os.getpid(), flush=True)
from oasis_jax import host_memory
host_memory.relaunch_with_huge_pages()
libc = ctypes.CDLL(ctypes.util.find_library('c'))
libc.malloc.restype = ctypes.c_void_p
size = 64 << 20
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = libc.malloc(size)
ctypes.memset(block, 1, size)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
libc.free(ctypes.c_void_p(block))
print('tunables', os.environ.get('GLIBC_TUNABLES', ''), 'faults', faults)
'''


class RelaunchTest(absltest.TestCase):

  def _run(self, **env):
    environ = {k: v for k, v in os.environ.items()
               if k not in ('GLIBC_TUNABLES', host_memory.OPT_OUT_ENV)}
    environ.update(env)
    script = self.create_tempfile('relaunch.py', _SCRIPT).full_path
    out = subprocess.run([sys.executable, script, _REPO], env=environ,
                         capture_output=True, text=True, check=True).stdout
    starts = [line.split()[1] for line in out.splitlines()
              if line.startswith('start')]
    last = out.splitlines()[-1].split()
    return starts, last[1] if len(last) == 4 else '', int(last[-1])

  @absltest.skipUnless(
      host_memory.huge_page_environment(
          {}, host_memory._glibc_version(), host_memory._thp_mode()),
      'needs glibc >= 2.35 and transparent huge pages in madvise mode')
  def test_relaunch_gives_malloc_huge_pages(self):
    starts, tunables, faults = self._run()
    self.assertLen(starts, 2)  # Ran twice: before and after the exec ...
    self.assertEqual(starts[0], starts[1])  # ... as the same process.
    self.assertEqual(tunables, host_memory.HUGE_PAGE_TUNABLE)
    # 4 KiB pages: 16384 faults for 64 MiB; 2 MiB pages: ~32.
    self.assertLess(faults, 1000)
    starts, tunables, faults = self._run(OASIS_JAX_HUGE_PAGES='0')
    self.assertLen(starts, 1)
    self.assertEqual(tunables, '')
    self.assertGreater(faults, 10000)


if __name__ == '__main__':
  absltest.main()
