"""The demo page (`python -m oasis_jax.demo`) in a real headless Chromium.

Debian's Chromium (/usr/bin/chromium, `apt-get install chromium`) driven by
Playwright. The test serves a tiny random checkpoint, uploads a label map,
generates, reads the images back from the page, resamples one class's region
and compares the pixels inside and outside it.

The same code makes the README's screenshot of a trained model:

  python tests/demo_browser_test.py --checkpoint=DIR --label=FILE.png \\
      --out=docs/demo.png
"""

import argparse
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from absl.testing import absltest
import numpy as np
from PIL import Image
import pytest

from configs import tiny64 as tiny64_lib
from oasis_jax.inference import synthesis
from oasis_jax.inference import export_format
from data_pipelines import palettes

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'
# As the machines here run Chromium: as root, no GPU, no network but
# loopback (no background connections).
CHROMIUM_FLAGS = ('--no-sandbox', '--disable-gpu', '--disable-quic',
                  '--no-first-run', '--disable-background-networking',
                  '--disable-component-update', '--disable-sync')
_TIMEOUT_MS = 300_000  # Loading and compiling on a busy 2-core CPU.


def demo_config():
  """tiny64 with a 32x32 latent: random weights then keep edits local."""
  config = tiny64_lib.get_config()
  config.generator.num_res_blocks = 2  # (At 4x4, an edit moves every pixel.)
  return config


def _label() -> np.ndarray:
  """64x64: class 3 above, class 4 below, a class 5 square, a 2 corner."""
  label = np.full((64, 64), 3, np.uint8)
  label[40:] = 4
  label[8:40, 8:40] = 5
  label[:6, 56:] = 2
  return label


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def start_demo(checkpoint: str, log_path: str) -> tuple[subprocess.Popen, str]:
  """Starts `python -m oasis_jax.demo`; returns (process, URL) once it serves.
  """
  port = _free_port()
  env = dict(os.environ, GRADIO_ANALYTICS_ENABLED='False')
  log = open(log_path, 'w')  # pylint: disable=consider-using-with
  proc = subprocess.Popen(
      [sys.executable, '-m', 'oasis_jax.demo', f'--checkpoint={checkpoint}',
       f'--port={port}'], cwd=_REPO, env=env, stdout=log,
      stderr=subprocess.STDOUT)
  url = f'http://127.0.0.1:{port}/'
  deadline = time.time() + _TIMEOUT_MS / 1000
  while time.time() < deadline:
    if proc.poll() is not None:
      log.close()
      with open(log_path) as f:
        raise RuntimeError(f'the demo exited ({proc.returncode}):\n'
                           f'{f.read()[-3000:]}')
    try:
      with urllib.request.urlopen(url, timeout=5) as r:
        if r.status == 200:
          return proc, url
    except OSError:
      time.sleep(1.0)
  proc.kill()
  raise RuntimeError(f'the demo did not serve {url} in time.')


def launch_chromium(playwright):
  return playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=list(CHROMIUM_FLAGS))


def _fetch_image(page, src: str) -> np.ndarray:
  """An image of the page by its src: uint8 [H, W, 3]."""
  body = page.request.get(src).body()
  with Image.open(io.BytesIO(body)) as img:
    return np.asarray(img.convert('RGB'))


def _sources(page, selector: str) -> list[str]:
  return page.eval_on_selector_all(selector,
                                   'els => els.map(e => e.currentSrc)')


_STATUS_JS = """() => {
    // The status line's text; null while an event is running.
    const w = document.querySelector('#status [data-testid=markdown-wrapper]');
    return (!w || w.classList.contains('pending')) ? null : w.innerText.trim();
  }"""


def _status(page) -> str:
  return page.evaluate(_STATUS_JS)


def _wait_status(page, text: str, old: str) -> str:
  """Waits for a new status line with `text` (or an error); returns it."""
  page.wait_for_function(
      f"""([t, old]) => {{ const x = ({_STATUS_JS})();
          return x !== null && x !== old &&
              (x.includes(t) || x.includes('Error')); }}""",
      arg=[text, old], timeout=_TIMEOUT_MS)
  return _status(page)


def _wait_new_gallery(page, old: list[str], count: int) -> list[str]:
  """Waits for `count` gallery images whose sources differ from `old`."""
  page.wait_for_function(
      """([old, n]) => {
           const s = [...document.querySelectorAll('#samples img')]
               .map(e => e.currentSrc);
           return s.length === n && s.every(x => x && !old.includes(x)) &&
               [...document.querySelectorAll('#samples img')]
               .every(e => e.complete && e.naturalWidth > 0); }""",
      arg=[old, count], timeout=_TIMEOUT_MS)
  return _sources(page, '#samples img')


def upload_label(page, path: str, expect: str) -> str:
  """Uploads a label PNG; returns the status line."""
  old = _status(page)
  page.set_input_files('#label_upload input[type=file]', path)
  return _wait_status(page, expect, old)


def generate(page, num_samples: int) -> list[np.ndarray]:
  """Sets the sample count, presses Generate; returns the samples."""
  old = _sources(page, '#samples img')
  box = page.locator('#num_samples input[type=number]')
  box.fill(str(num_samples))
  box.press('Enter')
  status = _status(page)
  page.click('#generate')
  status = _wait_status(page, 'Generated', status)
  if 'Error' in status:
    raise AssertionError(status)
  return [_fetch_image(page, s)
          for s in _wait_new_gallery(page, old, num_samples)]


def resample_classes(page, class_names: list[str],
                     num_samples: int) -> list[np.ndarray]:
  """Resamples the region of classes (checked in the list); the samples."""
  old = _sources(page, '#samples img')
  page.locator('#region_mode label', has_text='classes').click()
  for name in class_names:
    page.locator('#region_classes label', has_text=name).click()
  status = _status(page)
  page.click('#resample')
  status = _wait_status(page, 'Resampled', status)
  if 'Error' in status:
    raise AssertionError(status)
  return [_fetch_image(page, s)
          for s in _wait_new_gallery(page, old, num_samples)]


@pytest.mark.skipif(not os.path.exists(CHROMIUM),
                    reason='Chromium is not installed (apt-get install '
                    'chromium).')
class DemoBrowserTest(absltest.TestCase):

  def test_upload_generate_resample_in_chromium(self):
    sync_api = pytest.importorskip('playwright.sync_api')
    pytest.importorskip('gradio')
    root = tempfile.mkdtemp(prefix='demo_browser_test_')
    self.addCleanup(shutil.rmtree, root, True)
    checkpoint = export_format.save_inference(
        os.path.join(root, 'ckpt'), demo_config(),
        synthesis.random_variables(demo_config(), seed=3), source='tiny')
    label = _label()
    palette = palettes.generic_palette(6)  # The synthetic data set's.
    label_path = os.path.join(root, 'label.png')
    Image.fromarray(palettes.colorize(label, palette)).save(label_path)
    bad_path = os.path.join(root, 'bad.png')
    bad = palettes.colorize(label, palette)
    bad[:3, :3] = (7, 200, 9)
    Image.fromarray(bad).save(bad_path)

    proc, url = start_demo(checkpoint, os.path.join(root, 'demo.log'))
    self.addCleanup(proc.wait, 30)
    self.addCleanup(proc.terminate)
    with sync_api.sync_playwright() as p:
      browser = launch_chromium(p)
      page = browser.new_page(viewport={'width': 1280, 'height': 1400})
      page.goto(url, wait_until='domcontentloaded', timeout=_TIMEOUT_MS)
      page.wait_for_selector('#generate', timeout=_TIMEOUT_MS)

      # A map of unknown colours: a message on the page, no crash.
      status = upload_label(page, bad_path, 'Loaded')
      self.assertIn('1 colour(s) not in the palette of the model: '
                    '(7, 200, 9): 9 px', status)
      status = upload_label(page, label_path, 'Loaded label.png')
      self.assertIn('classes [2, 3, 4, 5]', status)

      samples = generate(page, 3)
      # The colourised label map shown is the uploaded one.
      shown = _fetch_image(page, _sources(page, '#label_image img')[0])
      np.testing.assert_array_equal(shown, palettes.colorize(label, palette))
      self.assertLen(samples, 3)
      for image in samples:
        self.assertEqual(image.shape, label.shape + (3,))
        self.assertGreater(image.std(), 5.0)  # Not blank.
      self.assertGreater(np.abs(samples[0].astype(int) - samples[1]).mean(),
                         1.0)

      edited = resample_classes(page, ['4: class 4'], 3)
      mask = label == 4
      change = np.abs(np.stack(edited).astype(float) -
                      np.stack(samples)).mean(-1)
      inside, outside = change[:, mask].mean(), change[:, ~mask].mean()
      self.assertGreater(inside, 5.0)
      self.assertGreater(inside, 4 * outside)

      shot = os.path.join(root, 'screenshot.png')
      page.screenshot(path=shot, full_page=True)
      browser.close()
    with Image.open(shot) as img:
      self.assertGreater(img.size[1], 600)
      self.assertGreater(np.asarray(img.convert('L')).std(), 10.0)


def make_screenshot(checkpoint: str, label_path: str, out: str,
                    num_samples: int = 4) -> None:
  """The README's screenshot: the page after generating (a small PNG)."""
  from playwright import sync_api  # pylint: disable=g-import-not-at-top
  root = tempfile.mkdtemp(prefix='demo_screenshot_')
  proc, url = start_demo(checkpoint, os.path.join(root, 'demo.log'))
  try:
    with sync_api.sync_playwright() as p:
      browser = launch_chromium(p)
      page = browser.new_page(viewport={'width': 1100, 'height': 1000})
      page.goto(url, wait_until='domcontentloaded', timeout=_TIMEOUT_MS)
      page.wait_for_selector('#generate', timeout=_TIMEOUT_MS)
      upload_label(page, label_path, 'Loaded')
      generate(page, num_samples)
      page.evaluate('window.scrollTo(0, 0)')
      page.wait_for_timeout(1000)
      raw = os.path.join(root, 'page.png')
      page.screenshot(path=raw, full_page=True,
                      clip={'x': 0, 'y': 0, 'width': 1100, 'height': 860})
      browser.close()
    with Image.open(raw) as img:
      img = img.convert('RGB').resize((880, 688), Image.LANCZOS)
      img.quantize(colors=256).save(out, optimize=True)
  finally:
    proc.terminate()
    proc.wait(30)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
  if '--out' in ' '.join(sys.argv):
    parser = argparse.ArgumentParser()
    parser.add_argument('--checkpoint', required=True)
    parser.add_argument('--label', required=True)
    parser.add_argument('--out', required=True)
    args = parser.parse_args()
    make_screenshot(args.checkpoint, args.label, args.out)
  else:
    absltest.main()
