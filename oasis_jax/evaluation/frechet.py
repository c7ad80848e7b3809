"""Fréchet Inception Distance: statistics, distance, caching, folder mode.

Statistics and the distance are computed in float64 on the host, as
pytorch-fid does. Features come from `inception.make_feature_fn`.

Folder mode (through `oasis_jax.evaluate`):
  python -m oasis_jax.evaluate fid --real=DIR --fake=DIR \
      --inception_weights=pt_inception-2015-12-05-6726825d.pth
"""

import hashlib
import json
import os
from typing import Callable, Iterator, Optional, Sequence, Tuple

from absl import logging
import jax
import numpy as np
from PIL import Image
import scipy.linalg

from oasis_jax.evaluation import inception

IMAGE_EXTENSIONS = ('.bmp', '.jpeg', '.jpg', '.pgm', '.png', '.ppm', '.tif',
                    '.tiff', '.webp')
_CACHE_FORMAT_VERSION = 1


def compute_statistics(features) -> Tuple[np.ndarray, np.ndarray]:
  """Mean and covariance of features, in float64.

  Args:
    features: [N, D] features, N >= 2.

  Returns:
    mu: [D] float64 mean; sigma: [D, D] float64 covariance (divides by N - 1,
    as np.cov).
  """
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or features.shape[0] < 2:
    raise ValueError(f'Need [N >= 2, D] features, got {features.shape}.')
  return features.mean(axis=0), np.cov(features, rowvar=False)


def _trace_sqrt_product_eigh(sigma1, sigma2) -> float:
  """tr(sqrtm(sigma1 @ sigma2)) of two covariances, through eigh.

  sigma1 @ sigma2 is similar to S = sigma1^1/2 @ sigma2 @ sigma1^1/2, which is
  symmetric positive semi-definite, so the principal square root's trace is
  the sum of the square roots of S's eigenvalues. With sigma1 = V W V^T,
  S's nonzero eigenvalues are those of W^1/2 V^T sigma2 V W^1/2, restricted to
  the eigenvectors whose eigenvalue is above round-off: for the rank-deficient
  covariances of N <= D samples that matrix is small, and the null space's
  round-off (whose square roots would add up to noise) is left out.
  """
  w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
  tol = max(w.max(), 0.0) * w.shape[0] * np.finfo(np.float64).eps
  keep = w > tol
  v = v[:, keep] * np.sqrt(w[keep])
  s = v.T @ sigma2 @ v
  ev = np.linalg.eigvalsh((s + s.T) / 2)
  return float(np.sqrt(np.clip(ev, 0, None)).sum())


def _trace_sqrt_product_sqrtm(sigma1, sigma2, eps: float) -> float:
  """The same trace as pytorch-fid computes it: scipy's sqrtm of the product."""
  covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
  if not np.isfinite(covmean).all():
    logging.warning('FID: sqrtm of the covariance product is singular; '
                    'adding %g to the diagonals.', eps)
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if np.iscomplexobj(covmean):
    imag = np.abs(np.diagonal(covmean).imag).max()
    if imag > 1e-3:
      raise ValueError(f'FID: imaginary component {imag} in sqrtm.')
    covmean = covmean.real
  return float(np.trace(covmean))


def frechet_distance(mu1, sigma1, mu2, sigma2, *, method: str = 'eigh',
                     eps: float = 1e-6) -> float:
  """Fréchet distance between Gaussians N(mu1, sigma1) and N(mu2, sigma2).

  ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 sigma2)),
  in float64.

  Args:
    mu1: [D] mean.
    sigma1: [D, D] covariance.
    mu2: [D] mean.
    sigma2: [D, D] covariance.
    method: how the trace term is computed. 'eigh' (default): exactly, from
      symmetric eigendecompositions (about 8x faster than 'sqrtm' at D=2048 and
      stable for the singular covariances of N <= D images). 'sqrtm':
      pytorch-fid's way, scipy.linalg.sqrtm of the product (with its eps
      retry and imaginary-part check); reproduces pytorch-fid to the last
      digits. The two agree to about 1e-6 relative on real FIDs.
    eps: 'sqrtm' only: diagonal offset if the square root is not finite.

  Returns:
    The distance (a Python float).
  """
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(
      np.asarray(mu2, np.float64))
  sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(
      np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
    raise ValueError(f'Shapes differ: mu {mu1.shape} vs {mu2.shape}, sigma '
                     f'{sigma1.shape} vs {sigma2.shape}.')
  diff = mu1 - mu2
  if method == 'eigh':
    tr_covmean = _trace_sqrt_product_eigh(sigma1, sigma2)
  elif method == 'sqrtm':
    tr_covmean = _trace_sqrt_product_sqrtm(sigma1, sigma2, eps)
  else:
    raise ValueError(f'Unknown method {method!r}: \'eigh\' or \'sqrtm\'.')
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) -
               2.0 * tr_covmean)


def fid_from_features(features1, features2, **kwargs) -> float:
  """FID between two feature sets ([N1, D], [N2, D]); kwargs: see above."""
  return frechet_distance(*compute_statistics(features1),
                          *compute_statistics(features2), **kwargs)


# ----------------------------------------------------------------------------
# Real-image statistics cache.
# ----------------------------------------------------------------------------


def make_cache_key(**parts) -> str:
  """A cache key from everything the real statistics depend on.

  Pass e.g. the data set name, split, root, image size, number of images,
  a data fingerprint (`fingerprint_files`) and the weights' identity; any
  change of any part gives another key, hence a recomputation.

  Args:
    **parts: JSON-serialisable values (tuples become lists).

  Returns:
    A canonical string (sorted keys).
  """
  return json.dumps(parts, sort_keys=True, default=str)


def fingerprint_files(paths: Sequence[str]) -> str:
  """SHA-256 over the files' paths, sizes and modification times."""
  digest = hashlib.sha256()
  for path in sorted(paths):
    stat = os.stat(path)
    digest.update(f'{os.path.abspath(path)}|{stat.st_size}|'
                  f'{stat.st_mtime_ns}\n'.encode())
  return digest.hexdigest()


def _cache_path(cache_dir: str, cache_key: str) -> str:
  name = hashlib.sha256(cache_key.encode()).hexdigest()[:24]
  return os.path.join(cache_dir, f'fid_real_stats_{name}.npz')


def load_or_compute_real_statistics(
    cache_dir: Optional[str], cache_key: str,
    compute_fn: Callable[[], Tuple[np.ndarray, np.ndarray]]
) -> Tuple[np.ndarray, np.ndarray]:
  """Real-image statistics from the cache, else computed once and cached.

  The file is named after a hash of `cache_key` and stores the key itself,
  which must match on load; so a key that changes (data, size, weights:
  see `make_cache_key`) invalidates the cached statistics. Only process 0
  writes; the write is atomic.

  Args:
    cache_dir: folder of cache files (created if needed); None or '': no
      cache, always compute.
    cache_key: identifies the statistics (`make_cache_key`).
    compute_fn: () -> (mu [D], sigma [D, D]).

  Returns:
    (mu, sigma) float64.
  """
  if not cache_dir:
    mu, sigma = compute_fn()
    return np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
  path = _cache_path(cache_dir, cache_key)
  if os.path.exists(path):
    try:
      with np.load(path, allow_pickle=False) as data:
        if (int(data['version']) == _CACHE_FORMAT_VERSION and
            str(data['key']) == cache_key):
          logging.info('FID: real statistics from the cache %s', path)
          return data['mu'], data['sigma']
        logging.warning('FID: cache %s holds another key; recomputing.', path)
    except (OSError, KeyError, ValueError) as e:
      logging.warning('FID: unreadable cache %s (%s); recomputing.', path, e)
  mu, sigma = compute_fn()
  mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
  if jax.process_index() == 0:
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'wb') as f:
      np.savez(f, mu=mu, sigma=sigma, key=np.array(cache_key),
               version=np.array(_CACHE_FORMAT_VERSION))
    os.replace(tmp, path)
    logging.info('FID: real statistics cached in %s', path)
  return mu, sigma


# ----------------------------------------------------------------------------
# Folder mode.
# ----------------------------------------------------------------------------


def list_images(folder: str) -> list[str]:
  """Sorted image files directly in `folder` (by extension)."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f'No such folder: {folder}')
  files = sorted(
      os.path.join(folder, name) for name in os.listdir(folder)
      if name.lower().endswith(IMAGE_EXTENSIONS))
  if not files:
    raise ValueError(f'No images ({", ".join(IMAGE_EXTENSIONS)}) in {folder}')
  return files


def _read_rgb(path: str) -> np.ndarray:
  with Image.open(path) as image:
    return np.asarray(image.convert('RGB'), np.uint8)


def _batches_of_same_size(paths: Sequence[str], batch_size: int
                          ) -> Iterator[np.ndarray]:
  """uint8 [B, H, W, 3] batches; images of different sizes go apart."""
  for start in range(0, len(paths), batch_size):
    groups = {}
    for path in paths[start:start + batch_size]:
      image = _read_rgb(path)
      groups.setdefault(image.shape, []).append(image)
    for images in groups.values():
      yield np.stack(images)


def features_of_folder(folder: str, feature_fn: Callable[[np.ndarray],
                                                         np.ndarray],
                       batch_size: int) -> np.ndarray:
  """[N, 2048] float64 features of every image in `folder`.

  The order follows sorted file names, except that images of different sizes
  within a batch are grouped (the statistics do not depend on the order).
  """
  paths = list_images(folder)
  features = [feature_fn(batch)
              for batch in _batches_of_same_size(paths, batch_size)]
  return np.concatenate(features)


def load_statistics(path: str) -> Tuple[np.ndarray, np.ndarray]:
  """(mu, sigma) float64 from an .npz with pytorch-fid's keys mu, sigma."""
  with np.load(path, allow_pickle=False) as data:
    return data['mu'].astype(np.float64), data['sigma'].astype(np.float64)


def _statistics_of(path: str, feature_fn, batch_size: int):
  """Statistics of a folder, or those stored in an .npz (keys mu, sigma)."""
  if path.endswith('.npz') and os.path.isfile(path):
    return load_statistics(path)
  return compute_statistics(features_of_folder(path, feature_fn, batch_size))


def fid_from_folders(real_dir: str, fake_dir: str, inception_weights: str,
                     batch_size: int = 50, *, verify_sha256: bool = True,
                     cache_dir: Optional[str] = None,
                     method: str = 'eigh',
                     mesh: Optional[jax.sharding.Mesh] = None) -> float:
  """FID between the images of two folders.

  Images are read with PIL as RGB uint8 and preprocessed as pytorch-fid does
  (bilinear resize to 299, scale to [-1, 1]). Either folder may instead be an
  .npz with pytorch-fid's keys `mu` and `sigma`.

  Args:
    real_dir: folder of real images (or statistics .npz).
    fake_dir: folder of generated images (or statistics .npz).
    inception_weights: `pt_inception-2015-12-05-6726825d.pth` or its .npz.
    batch_size: images per forward pass (rounded up to a multiple of the
      number of devices).
    verify_sha256: check the weights are pytorch-fid's (see
      `inception_weights.read_state_dict`).
    cache_dir: if set, the real folder's statistics are cached there, keyed
      by its files (names, sizes, mtimes), batch-independent settings and the
      weights file.
    method: trace-term method of `frechet_distance`.
    mesh: device mesh with a 'data' axis (default: all devices).

  Returns:
    The FID (float).
  """
  variables = inception.load_inception_params(
      inception_weights, verify_sha256=verify_sha256,
      setting='--inception_weights')
  feature_fn = inception.make_feature_fn(variables, mesh=mesh,
                                         batch_size=batch_size)

  def real_stats():
    return _statistics_of(real_dir, feature_fn, batch_size)

  if cache_dir and os.path.isdir(real_dir):
    key = make_cache_key(
        kind='folder', folder=os.path.abspath(real_dir),
        files=fingerprint_files(list_images(real_dir)),
        weights=fingerprint_files([inception_weights]))
    mu1, sigma1 = load_or_compute_real_statistics(cache_dir, key, real_stats)
  else:
    mu1, sigma1 = real_stats()
  mu2, sigma2 = _statistics_of(fake_dir, feature_fn, batch_size)
  return frechet_distance(mu1, sigma1, mu2, sigma2, method=method)


def main(real: str, fake: str, inception_weights: str, batch_size: int = 50,
         *, verify_sha256: bool = True, cache_dir: Optional[str] = None,
         method: str = 'eigh') -> float:
  """Folder mode (`oasis_jax.evaluate fid`): prints and returns the FID.

  Args:
    real: folder of real images, or an .npz of their statistics.
    fake: folder of generated images, or an .npz of their statistics.
    inception_weights: the weights file (see `fid_from_folders`).
    batch_size: images per forward pass.
    verify_sha256: check the weights are pytorch-fid's.
    cache_dir: where the real statistics are cached ('' or None: nowhere).
    method: trace-term method of `frechet_distance`.

  Returns:
    The FID.
  """
  if not real or not fake:
    raise ValueError('FID folder mode needs --real=DIR and --fake=DIR.')
  value = fid_from_folders(real, fake, inception_weights, batch_size,
                           verify_sha256=verify_sha256, cache_dir=cache_dir,
                           method=method)
  print(f'FID: {value:.6f}')
  return value
