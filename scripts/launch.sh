#!/usr/bin/env bash
# Starts an oasis_jax command with the process environment that pays off on a CPU host.
#
#   scripts/launch.sh oasis_jax.main --config=configs/synthetic.py --workdir=runs/synthetic
#   scripts/launch.sh oasis_jax.generate --checkpoint=DIR --labels=DIR --out=DIR
#   scripts/launch.sh benchmarks.train_step --config=configs/ade20k.py --config.data.image_size=64 --config.train.batch_size=2
#
# The first argument is a Python module (run as `python -m MODULE`), the rest are its arguments.
# The library never changes its own process environment; everything below is set here, only
# where it is not set already, and each setting can be turned off:
#
# - GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (glibc >= 2.35, transparent huge pages in 'madvise'
#   mode): malloc asks for huge pages for the memory it maps. XLA:CPU maps the big temporary
#   buffers of a compiled program afresh on every call; with 4 KiB pages the first touch of each
#   page is a page fault (tens of thousands per call at 128x128). Existing tunables are kept.
#   Off: OASIS_JAX_HUGE_PAGES=0.
#
# PYTHON selects the interpreter (default: python).
set -euo pipefail

if [[ $# -lt 1 || "$1" == -* ]]; then
  echo "usage: $0 MODULE [ARGS...]   (e.g. $0 oasis_jax.main --config=... --workdir=...)" >&2
  exit 2
fi

glibc_version() {  # "2.36", or nothing when this is not glibc.
  getconf GNU_LIBC_VERSION 2>/dev/null | awk '$1 == "glibc" {print $2}'
}

thp_mode() {  # The kernel's transparent huge page mode: always, madvise or never.
  local f=/sys/kernel/mm/transparent_hugepage/enabled
  [[ -r $f ]] && sed -n 's/.*\[\(.*\)\].*/\1/p' "$f"
}

version_at_least() {  # version_at_least 2.36 2.35
  [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" == "$2" ]]
}

if [[ "${OASIS_JAX_HUGE_PAGES:-1}" != 0 && "${GLIBC_TUNABLES:-}" != *glibc.malloc.hugetlb* ]]; then
  version=$(glibc_version || true)
  if [[ -n $version ]] && version_at_least "$version" 2.35 && [[ "$(thp_mode || true)" == madvise ]]; then
    export GLIBC_TUNABLES="${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}glibc.malloc.hugetlb=1"
  fi
fi

module=$1
shift
exec "${PYTHON:-python}" -m "$module" "$@"
