"""scripts/launch.sh: the process environment it sets, and what that does."""

import os
import platform
import re
import subprocess
import sys

from absl.testing import absltest

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LAUNCH = os.path.join(_REPO, 'scripts', 'launch.sh')

# Run as a module through the launcher: counts the page faults of touching
# a fresh 64 MiB malloc block (glibc maps it afresh; huge pages or not).
_MODULE = r'''
import ctypes, ctypes.util, os, resource, sys
libc = ctypes.CDLL(ctypes.util.find_library('c'))
libc.malloc.restype = ctypes.c_void_p
size = 64 << 20
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = libc.malloc(size)
ctypes.memset(block, 1, size)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
libc.free(ctypes.c_void_p(block))
print(os.getpid(), repr(os.environ.get('GLIBC_TUNABLES')), faults,
      ' '.join(sys.argv[1:]))
'''


def _huge_pages_apply() -> bool:
  """glibc >= 2.35 and THP in madvise mode, read independently of the script."""
  libc = platform.libc_ver()
  try:
    with open('/sys/kernel/mm/transparent_hugepage/enabled') as f:
      mode = re.search(r'\[(\w+)\]', f.read()).group(1)
  except OSError:
    return False
  version = tuple(int(p) for p in libc[1].split('.')[:2]) if libc[1] else ()
  return libc[0] == 'glibc' and version >= (2, 35) and mode == 'madvise'


class LaunchTest(absltest.TestCase):

  def _launch(self, *args, **env):
    folder = self.create_tempdir().full_path
    with open(os.path.join(folder, 'probe_module.py'), 'w') as f:
      f.write(_MODULE)
    environ = {k: v for k, v in os.environ.items()
               if k not in ('GLIBC_TUNABLES', 'OASIS_JAX_HUGE_PAGES')}
    environ.update(env, PYTHON=sys.executable, PYTHONPATH=folder)
    process = subprocess.Popen([_LAUNCH, 'probe_module', *args], env=environ,
                               stdout=subprocess.PIPE, text=True)
    out, _ = process.communicate()
    self.assertEqual(process.returncode, 0)
    pid, tunables, faults, argv = (out.strip().split(' ', 3) + [''])[:4]
    # exec: the module runs as the launcher's own process.
    self.assertEqual(int(pid), process.pid)
    return eval(tunables), int(faults), argv  # pylint: disable=eval-used

  def test_module_gets_its_arguments(self):
    _, _, argv = self._launch('--config=a b', '--workdir=w')
    self.assertEqual(argv, '--config=a b --workdir=w')

  def test_usage_error_without_a_module(self):
    result = subprocess.run([_LAUNCH], capture_output=True, text=True)
    self.assertEqual(result.returncode, 2)
    self.assertEqual(len(result.stderr.strip().splitlines()), 1)
    self.assertIn('usage:', result.stderr)

  def test_huge_page_malloc_where_it_applies(self):
    tunables, faults, _ = self._launch()
    if not _huge_pages_apply():  # Not glibc >= 2.35 with THP 'madvise'.
      self.assertIsNone(tunables)
      return
    self.assertEqual(tunables, 'glibc.malloc.hugetlb=1')
    # 4 KiB pages: 16384 faults for 64 MiB; 2 MiB pages: ~32.
    self.assertLess(faults, 1000)
    tunables, faults, _ = self._launch(OASIS_JAX_HUGE_PAGES='0')
    self.assertIsNone(tunables)
    self.assertGreater(faults, 10000)
    # Tunables already set are kept; a hugetlb setting of the user wins.
    tunables, _, _ = self._launch(GLIBC_TUNABLES='glibc.malloc.arena_max=2')
    self.assertEqual(tunables,
                     'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1')
    tunables, faults, _ = self._launch(GLIBC_TUNABLES='glibc.malloc.hugetlb=0')
    self.assertEqual(tunables, 'glibc.malloc.hugetlb=0')
    self.assertGreater(faults, 10000)


if __name__ == '__main__':
  absltest.main()
