"""The paper's training augmentation and test patches, on the host (numpy) and on device (jax).

Training (§4.1): a random `crop x crop` patch of the `size x size` image, its horizontal
reflection half of the time, and PCA colour noise `eigvec @ (alpha * eigval)` with
`alpha ~ N(0, pca_noise_std^2)` drawn once per image per use, added to every pixel.
The mean image (§2) is subtracted pixelwise from the full image before cropping, so a
patch gets the mean's same window (reflected with it). Testing (§4.1): the centre patch,
or the four corner and the centre patches and their reflections (ten patches).

All outputs are float32 on the 0..255 pixel scale minus the mean (as Caffe and
cuda-convnet feed the net), divided by `pixel_scale` (ones, except for torchvision's
normalisation). `stats` is a `statistics.DataStats`: `mean_image` float32
`(size, size, 3)`, `pca_eigval` `(3,)` and `pca_eigvec` `(3, 3)` (columns are
eigenvectors), both already on the 0..255 scale, and `pixel_scale` `(3,)`.

The host and the device versions draw from the same distribution: offsets uniform over
the `(size - crop + 1)^2` windows, reflection with probability 1/2, alphas Gaussian.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class CropParams(NamedTuple):
  """One draw of the §4.1 augmentation for one image."""
  y: int  # Top row of the patch.
  x: int  # Left column of the patch.
  flip: bool  # Reflect horizontally.
  rgb_noise: np.ndarray  # float32 (3,): the PCA colour noise added to every pixel.

  @property
  def channels(self) -> str:
    """The channel order `HostAugment.crop` needs the decoded image in."""
    return 'BGR' if self.flip else 'RGB'


class HostAugment:
  """§4.1 augmentation of one decoded image, in numpy, on the host.

  Use: `params = aug.sample(rng)`, decode the image in `params.channels` order, then
  `aug.apply(image, params)`, or its two halves: `crop` (uint8 patch, reflected) and
  `normalize` (float32, minus the mean, plus the colour noise). The input pipeline runs
  `crop` in the Grain workers and `normalize` in the main process, so that only uint8
  patches cross between processes (a quarter of the float32 bytes).

  A reflected patch is made from a BGR-decoded image by reversing each row of bytes:
  that reverses the pixel order and turns BGR back into RGB in one pass. numpy's
  reversed-slice flip of an RGB image (`image[:, ::-1]`) runs an inner loop of 3 per
  pixel and costs about as much as the JPEG decode itself (measured: 1,700 vs 4,600
  augmented 224x224 patches/s per core).
  """

  def __init__(self, stats, *, crop_size: int, flip: bool, pca_noise_std: float):
    self._mean = np.asarray(stats.mean_image, np.float32)
    self._flipped_mean = np.ascontiguousarray(self._mean[:, ::-1])
    self._eigval = np.asarray(stats.pca_eigval, np.float32)
    self._eigvec = np.asarray(stats.pca_eigvec, np.float32)
    scale = np.asarray(stats.pixel_scale, np.float32)
    self._inverse_scale = None if np.all(scale == 1) else 1 / scale
    self._size = self._mean.shape[0]
    if not 0 < crop_size <= self._size:
      raise ValueError(f'crop_size={crop_size} must be in 1..image_size={self._size}')
    self._crop = crop_size
    self._flip = flip
    self._pca_noise_std = pca_noise_std

  @property
  def crop_size(self) -> int:
    return self._crop

  def sample(self, rng: np.random.Generator) -> CropParams:
    """Draws the patch window, the reflection and the colour noise for one image."""
    y, x = rng.integers(0, self._size - self._crop + 1, size=2)
    flip = bool(self._flip and rng.random() < 0.5)
    alpha = rng.normal(0.0, self._pca_noise_std, size=3).astype(np.float32)
    rgb_noise = self._eigvec @ (alpha * self._eigval)
    return CropParams(int(y), int(x), flip, rgb_noise.astype(np.float32))

  def crop(self, image: np.ndarray, params: CropParams,
           out: np.ndarray | None = None) -> np.ndarray:
    """The uint8 RGB `(crop, crop, 3)` patch, reflected if `params.flip`.

    Args:
      image: uint8 `(size, size, 3)`, in `params.channels` order (BGR when reflected).
      params: from `sample`.
      out: optional C-contiguous uint8 `(crop, crop, 3)` to write into (a batch row).
    """
    s, c, y, x = self._size, self._crop, params.y, params.x
    if image.shape != (s, s, 3):
      raise ValueError(f'expected a {s}x{s}x3 image, got {image.shape}')
    rows = np.ascontiguousarray(image).reshape(s, s * 3)[y:y + c, 3 * x:3 * (x + c)]
    if params.flip:
      rows = rows[:, ::-1]  # BGR bytes reversed: RGB pixels in reflected order.
    if out is None:
      out = np.empty((c, c, 3), np.uint8)
    np.copyto(out.reshape(c, c * 3), rows)  # reshape: a view, or raises.
    return out

  def normalize(self, patch: np.ndarray, params: CropParams,
                out: np.ndarray | None = None) -> np.ndarray:
    """float32 `patch` minus the mean's window (reflected with it) plus the colour noise,
    over the pixel scale.

    Args:
      patch: uint8 `(crop, crop, 3)` from `crop` with the same `params`.
      params: from `sample`.
      out: optional C-contiguous float32 `(crop, crop, 3)` to write into (a batch row).
    """
    s, c, y, x = self._size, self._crop, params.y, params.x
    if params.flip:
      mean = self._flipped_mean[y:y + c, s - c - x:s - x]
    else:
      mean = self._mean[y:y + c, x:x + c]
    if out is None:
      out = np.empty((c, c, 3), np.float32)
    flat = out.reshape(c, c * 3)
    np.subtract(np.ascontiguousarray(patch).reshape(c, c * 3), mean.reshape(c, c * 3),
                out=flat)
    flat += np.tile(params.rgb_noise, c)
    if self._inverse_scale is not None:
      flat *= np.tile(self._inverse_scale, c)
    return out

  def apply(self, image: np.ndarray, params: CropParams) -> np.ndarray:
    """`normalize(crop(image))`: float32 `(crop, crop, 3)`, 0..255 minus mean, RGB."""
    return self.normalize(self.crop(image, params), params)


def device_augment(rng, images_uint8, stats, *, crop_size: int, flip: bool,
                   pca_noise_std: float):
  """§4.1 training augmentation of a batch inside a jitted step.

  Args:
    rng: a jax PRNG key.
    images_uint8: uint8 `(b, size, size, 3)`.
    stats: `DataStats` (arrays; may be traced).
    crop_size: the patch side (static).
    flip: whether to reflect half of the patches (static).
    pca_noise_std: sigma of the colour-noise alphas (static; 0 turns it off).

  Returns:
    float32 `(b, crop, crop, 3)`, the same distribution as `HostAugment`.
  """
  b, s = images_uint8.shape[0], images_uint8.shape[1]
  k_y, k_x, k_flip, k_alpha = jax.random.split(rng, 4)
  ys = jax.random.randint(k_y, (b,), 0, s - crop_size + 1)
  xs = jax.random.randint(k_x, (b,), 0, s - crop_size + 1)
  if flip:
    flips = jax.random.bernoulli(k_flip, 0.5, (b,))
  else:
    flips = jnp.zeros((b,), bool)
  alphas = pca_noise_std * jax.random.normal(k_alpha, (b, 3), jnp.float32)
  eigval = jnp.asarray(stats.pca_eigval, jnp.float32)
  eigvec = jnp.asarray(stats.pca_eigvec, jnp.float32)
  rgb_noise = (alphas * eigval) @ eigvec.T  # Row i: eigvec @ (alpha_i * eigval).
  mean = jnp.asarray(stats.mean_image, jnp.float32)
  window = (crop_size, crop_size, 3)

  def one(image, y, x, reflect):
    start = (y, x, 0)
    patch = (jax.lax.dynamic_slice(image, start, window).astype(jnp.float32)
             - jax.lax.dynamic_slice(mean, start, window))
    return jnp.where(reflect, patch[:, ::-1], patch)

  patches = jax.vmap(one)(images_uint8, ys, xs, flips)
  return (patches + rgb_noise[:, None, None, :]) / jnp.asarray(stats.pixel_scale, jnp.float32)


def _patch(images_uint8, stats, y: int, x: int, crop_size: int):
  """The normalised window at (y, x) of every image: float32 `(b, c, c, 3)`."""
  window = images_uint8[:, y:y + crop_size, x:x + crop_size].astype(jnp.float32)
  mean = jnp.asarray(stats.mean_image, jnp.float32)[y:y + crop_size, x:x + crop_size]
  return (window - mean) / jnp.asarray(stats.pixel_scale, jnp.float32)


def center_patch(images_uint8, stats, crop_size: int):
  """§4.1 single-patch testing: the centre `crop x crop` patch, normalised.

  Returns float32 `(b, crop, crop, 3)`. The centre window starts at `(size - crop) // 2`.
  """
  offset = (images_uint8.shape[1] - crop_size) // 2
  return _patch(images_uint8, stats, offset, offset, crop_size)


def ten_patches(images_uint8, stats, crop_size: int):
  """§4.1 testing: the four corner and the centre patches, then their reflections.

  Returns float32 `(10, b, crop, crop, 3)` in the order top-left, top-right, bottom-left,
  bottom-right, centre, then the same five reflected. The softmax outputs of the ten are
  averaged by the caller.
  """
  s = images_uint8.shape[1]
  far, mid = s - crop_size, (s - crop_size) // 2
  offsets = ((0, 0), (0, far), (far, 0), (far, far), (mid, mid))
  patches = jnp.stack([_patch(images_uint8, stats, y, x, crop_size) for y, x in offsets])
  return jnp.concatenate([patches, patches[:, :, :, ::-1]])
