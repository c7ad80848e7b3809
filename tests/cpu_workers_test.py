"""Tests of the automatic input worker count."""

import os

import pytest

from oasis_jax.runtime import cpu_workers


@pytest.mark.parametrize('cpus, expected', [
    (1, 0), (2, 0), (3, 2), (4, 3), (16, 15), (33, 32), (96, 32)])
def test_auto_leaves_one_core_to_the_main_process(cpus, expected):
  assert cpu_workers.auto_num_workers(cpus) == expected


def test_explicit_counts_are_kept():
  assert cpu_workers.resolve(0, cpus=16) == 0
  assert cpu_workers.resolve(5, cpus=2) == 5


def test_auto_uses_the_given_or_usable_cpus():
  assert cpu_workers.resolve(-1, cpus=8) == 7
  expected = cpu_workers.auto_num_workers(len(os.sched_getaffinity(0)))
  assert cpu_workers.resolve(-1) == expected


def test_below_minus_one_is_an_error_naming_the_key():
  with pytest.raises(ValueError, match=r'config.data.num_workers=-2'):
    cpu_workers.resolve(-2)
