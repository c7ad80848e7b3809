"""Tests of the persistent compilation cache's location and switch."""

import os
import subprocess
import sys
import textwrap

import jax
import pytest

from oasis_jax.runtime import compilation_cache


def test_auto_is_under_xdg_cache_home():
  env = {'XDG_CACHE_HOME': '/x/cache'}
  assert compilation_cache.resolve('auto', env) == (
      '/x/cache/oasis_jax/jax_compilation_cache')


def test_auto_without_xdg_is_under_home_dot_cache():
  assert compilation_cache.resolve('auto', {}) == os.path.join(
      os.path.expanduser('~'), '.cache', 'oasis_jax', 'jax_compilation_cache')


def test_empty_setting_turns_the_cache_off():
  assert compilation_cache.resolve('', {'XDG_CACHE_HOME': '/x'}) is None


def test_a_path_setting_is_used_expanded():
  assert compilation_cache.resolve('~/jit', {}) == os.path.join(
      os.path.expanduser('~'), 'jit')


@pytest.mark.parametrize('setting', ['auto', '', '/other'])
def test_environment_variable_wins_even_when_empty(setting):
  assert compilation_cache.resolve(
      setting, {'JAX_COMPILATION_CACHE_DIR': '/env/jit'}) == '/env/jit'
  assert compilation_cache.resolve(
      setting, {'JAX_COMPILATION_CACHE_DIR': ''}) is None


def test_enable_sets_jax_config_when_the_variable_is_unset(
    monkeypatch, tmp_path):
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR', raising=False)
  before = jax.config.jax_compilation_cache_dir
  try:
    assert compilation_cache.enable(str(tmp_path)) == str(tmp_path)
    assert jax.config.jax_compilation_cache_dir == str(tmp_path)
    assert compilation_cache.enable('') is None
    assert jax.config.jax_compilation_cache_dir is None
  finally:
    jax.config.update('jax_compilation_cache_dir', before)


_PROGRAM = textwrap.dedent("""
    import jax, jax.numpy as jnp
    from oasis_jax.runtime import compilation_cache
    print(compilation_cache.enable('auto'))
    jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((8, 8))).block_until_ready()
""")


def test_a_fresh_process_writes_compiled_programs_to_the_default_folder(
    tmp_path):
  env = {k: v for k, v in os.environ.items()
         if k != 'JAX_COMPILATION_CACHE_DIR'}
  env['XDG_CACHE_HOME'] = str(tmp_path)
  env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  out = subprocess.run([sys.executable, '-c', _PROGRAM], env=env, check=True,
                       capture_output=True, text=True).stdout
  folder = tmp_path / 'oasis_jax' / 'jax_compilation_cache'
  assert out.strip() == str(folder)
  assert any(folder.iterdir())
