"""The training set's mean image (§2) and RGB PCA (§4.1): cached beside the data, loaded.

One job. `compute_stats` makes one pass over the prepared training split (in Grain
workers) and `write_stats` turns its sums into `alexnet_stats_<split>_<size>px.npz` in
the prepared dataset's directory; `load_stats` turns the config's choices (`data.mean`,
`data.pca_stats`) into a `DataStats`.

Pixel scale. The paper's net eats pixels on the 0..255 scale minus the mean (§2). The
published ImageNet PCA eigenpairs are defined for pixels in [0, 1]; the colour noise
`eigvec @ (alpha * eigval)` is computed on that scale and multiplied by 255 (docs/paper.md,
"Data and augmentation"), so `DataStats.pca_eigval` holds 255 * the [0, 1]-scale
eigenvalues and noise = `eigvec @ (alpha * pca_eigval)` directly on the 0..255 scale. PCA
computed over a dataset follows the same convention: the covariance of its [0, 1] pixels,
eigenvalues times 255.

torchvision's pretrained nets eat RGB/255 minus (0.485, 0.456, 0.406), divided by
(0.229, 0.224, 0.225) (`data.mean='torchvision'`): on the 0..255 scale, the mean 255 x
those means, then a division by `DataStats.pixel_scale` = 255 x those deviations.
"""

import os
import re
from typing import NamedTuple

from absl import logging
import grain
import numpy as np

from alexnet_jax.data import datasets, decode, sources, workers

# Per-channel ImageNet means, RGB on 0..255 (0.485, 0.456, 0.406 x 255; docs/paper.md, "Data
# and augmentation").
IMAGENET_MEAN_RGB = np.array([0.485, 0.456, 0.406]) * 255
# Per-channel ImageNet standard deviations, RGB on 0..255, as torchvision's nets expect.
IMAGENET_STD_RGB = np.array([0.229, 0.224, 0.225]) * 255
MEANS = ('dataset', 'imagenet', 'torchvision', 'none')
# ImageNet RGB PCA for pixels in [0, 1] (docs/paper.md, "Data and augmentation"): eigenvalues,
# eigenvectors as columns.
IMAGENET_PCA_EIGVAL = np.array([0.2175, 0.0188, 0.0045])
IMAGENET_PCA_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                                [-0.5808, -0.0045, -0.8140],
                                [-0.5836, -0.6948, 0.4203]])
_STATS_BATCH = 32  # Images per task of the statistics pass.


class DataStats(NamedTuple):
  """What the augmentation subtracts and adds; a pytree, so it can enter a jitted step."""
  mean_image: np.ndarray  # float32 (image_size, image_size, 3), 0..255 scale.
  pca_eigval: np.ndarray  # float32 (3,), 255 x the eigenvalues of [0, 1] pixels.
  pca_eigvec: np.ndarray  # float32 (3, 3), columns are the eigenvectors.
  # float32 (3,): the net's input is (pixels - mean + colour noise) / pixel_scale.
  pixel_scale: np.ndarray = np.ones(3, np.float32)


def stats_path(config) -> str:
  d = config.data
  # A slice of a split is named in words: 'train[:80%]' as train_to80pc.
  split = d.train_split.replace('%', 'pc').replace(':', 'to')
  split = re.sub(r'[^\w.-]+', '_', split).strip('_')
  return os.path.join(sources.dataset_dir(config), f'alexnet_stats_{split}_{d.image_size}px.npz')


def write_stats(config, count: int, image_sum: np.ndarray, pixel_sum: np.ndarray,
                outer_sum: np.ndarray) -> str:
  """Turns sums over `count` training images into the cached file; returns its path.

  Args:
    config: the config (names the file).
    count: number of images summed.
    image_sum: float64 `(size, size, 3)`, the sum of the images (0..255).
    pixel_sum: float64 `(3,)`, the sum of all RGB pixel values on the [0, 1] scale.
    outer_sum: float64 `(3, 3)`, the sum of the outer products of those pixel values.
  """
  pixels = count * config.data.image_size ** 2
  mean_pixel = pixel_sum / pixels
  covariance = outer_sum / pixels - np.outer(mean_pixel, mean_pixel)
  eigval, eigvec = np.linalg.eigh(covariance)
  order = np.argsort(eigval)[::-1]
  path = stats_path(config)
  np.savez(path + '.incomplete.npz', mean_image=(image_sum / count).astype(np.float32),
           pca_eigval=eigval[order], pca_eigvec=eigvec[:, order], num_images=count)
  os.replace(path + '.incomplete.npz', path)
  logging.info('Wrote %s: mean RGB %s, PCA eigenvalues ([0, 1] pixels) %s', path,
               np.round(mean_pixel * 255, 2), np.round(eigval[order], 5))
  return path


def _cached(config) -> dict[str, np.ndarray]:
  path = stats_path(config)
  if not os.path.exists(path):
    raise sources.DataMissingError(
        f'No cached training-set statistics at {path} (needed by data.mean='
        f'{config.data.mean!r}, data.pca_stats={config.data.pca_stats!r}). Run: '
        f"{datasets.prepare_command()}, or set data.mean='imagenet' and "
        "data.pca_stats='imagenet' to use the published constants.")
  with np.load(path) as f:
    return dict(f)


def load_stats(config) -> DataStats:
  """The mean image and PCA eigenpairs `config` asks for (see the module docstring)."""
  d = config.data
  size = d.image_size
  if 'dataset' in (d.mean, d.pca_stats):
    sources.dataset_info(config)  # Missing data: say so before the statistics.
    cached = _cached(config)
  if d.mean == 'dataset':
    mean_image = cached['mean_image']
  elif d.mean in ('imagenet', 'torchvision'):
    mean_image = np.broadcast_to(IMAGENET_MEAN_RGB, (size, size, 3))
  elif d.mean == 'none':
    mean_image = np.zeros((size, size, 3))
  else:
    raise ValueError(f'data.mean={d.mean!r}: expected one of {MEANS}.')
  scale = IMAGENET_STD_RGB if d.mean == 'torchvision' else np.ones(3)
  if d.pca_stats == 'imagenet':
    eigval, eigvec = IMAGENET_PCA_EIGVAL, IMAGENET_PCA_EIGVEC
  elif d.pca_stats == 'dataset':
    eigval, eigvec = cached['pca_eigval'], cached['pca_eigvec']
  else:
    raise ValueError(f"data.pca_stats={d.pca_stats!r}: expected 'imagenet' or 'dataset'.")
  return DataStats(np.array(mean_image, np.float32),
                   np.asarray(eigval * 255, np.float32),
                   np.asarray(eigvec, np.float32),
                   np.asarray(scale, np.float32))


class _StatsSums(grain.transforms.Map):
  """A batch of records -> the sums `write_stats` needs."""

  def __init__(self, size: int):
    self._size = size

  def map(self, records):
    image_sum = np.zeros((self._size, self._size, 3))
    pixel_sum, outer_sum = np.zeros(3), np.zeros((3, 3))
    for data in records['image']:
      image = decode.decode_to_square(data, self._size)
      image_sum += image
      pixels = image.reshape(-1, 3) / 255.0
      pixel_sum += pixels.sum(axis=0)
      outer_sum += pixels.T @ pixels
    return {'count': len(records['image']), 'image_sum': image_sum,
            'pixel_sum': pixel_sum, 'outer_sum': outer_sum}


def compute_stats(config) -> str:
  """One pass over the training split (§2 mean image, §4.1 RGB PCA); returns the file."""
  source = sources.open_split(config, config.data.train_split)
  ds = (grain.MapDataset.source(source)
        .batch(_STATS_BATCH, batch_fn=workers.records)
        .map(_StatsSums(config.data.image_size)))
  count, image_sum, pixel_sum, outer_sum = 0, 0.0, 0.0, 0.0
  for i, part in enumerate(workers.to_iterator(ds, config)):
    count += part['count']
    image_sum = image_sum + part['image_sum']
    pixel_sum = pixel_sum + part['pixel_sum']
    outer_sum = outer_sum + part['outer_sum']
    if i % 1000 == 0:
      logging.info('Mean image and PCA: %d of %d training images', count, len(source))
  return write_stats(config, count, image_sum, pixel_sum, outer_sum)
