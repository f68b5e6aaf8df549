"""Tests for alexnet_jax/data/augment.py: §4.1 crops, reflections, PCA noise, mean, ten patches."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from alexnet_jax.configs import default
from alexnet_jax.data import augment, statistics

N = 20_000  # Draws per distribution test: enough to hit all 33 x 33 offsets.
EIGVAL = statistics.IMAGENET_PCA_EIGVAL * 255
EIGVEC = statistics.IMAGENET_PCA_EIGVEC


def _stats(mean_image, eigval=EIGVAL, eigvec=EIGVEC):
  return statistics.DataStats(np.asarray(mean_image, np.float32),
                              np.asarray(eigval, np.float32),
                              np.asarray(eigvec, np.float32))


def _coded_image(size: int, step: int) -> np.ndarray:
  """Red = step * row, green = step * column, blue = 7: a patch tells where it came from."""
  yy, xx = np.mgrid[0:size, 0:size]
  return np.stack([yy * step, xx * step, np.full_like(yy, 7)], -1).astype(np.uint8)


def _where(patches: np.ndarray, step: int, crop: int):
  """(y, x, flipped) of noise-free, zero-mean patches of `_coded_image`."""
  y = np.rint(patches[:, 0, 0, 0] / step).astype(int)
  left = np.rint(patches[:, 0, 0, 1] / step).astype(int)
  flipped = patches[:, 0, 1, 1] < patches[:, 0, 0, 1]
  return y, np.where(flipped, left - (crop - 1), left), flipped


def _host_draws(image, stats, n, *, crop, flip, pca_noise_std, seed=0):
  aug = augment.HostAugment(stats, crop_size=crop, flip=flip, pca_noise_std=pca_noise_std)
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    params = aug.sample(rng)
    out.append(aug.apply(image if not params.flip else image[..., ::-1], params))
  return np.stack(out)


@functools.partial(jax.jit, static_argnames=('n', 'crop', 'flip', 'pca_noise_std'))
def _device_draws(key, image, stats, *, n, crop, flip, pca_noise_std):
  images = jnp.broadcast_to(image, (n,) + image.shape)
  return augment.device_augment(key, images, stats, crop_size=crop, flip=flip,
                                pca_noise_std=pca_noise_std)


def _device(image, stats, n, *, crop, flip, pca_noise_std, seed=0):
  return np.asarray(_device_draws(jax.random.key(seed), image, stats, n=n, crop=crop,
                                  flip=flip, pca_noise_std=pca_noise_std))


def _check_offsets_and_flips(patches, image, crop):
  y, x, flipped = _where(patches, 6, crop)
  positions = set(zip(y.tolist(), x.tolist()))
  assert positions == {(i, j) for i in range(33) for j in range(33)}  # 40 - 8 + 1 = 33.
  assert abs(flipped.mean() - 0.5) < 0.015  # Binomial sd 0.0035.
  for k in range(0, len(patches), 997):  # Each patch is exactly its window.
    window = image[y[k]:y[k] + crop, x[k]:x[k] + crop].astype(np.float32)
    np.testing.assert_array_equal(patches[k], window[:, ::-1] if flipped[k] else window)
  return y, x, flipped


def test_host_crops_cover_all_33x33_offsets_and_flip_half_the_time():
  image = _coded_image(40, 6)
  patches = _host_draws(image, _stats(np.zeros((40, 40, 3))), N, crop=8, flip=True,
                        pca_noise_std=0.0)
  _check_offsets_and_flips(patches, image, 8)


def test_device_crops_cover_all_33x33_offsets_and_flip_half_the_time():
  image = _coded_image(40, 6)
  patches = _device(image, _stats(np.zeros((40, 40, 3))), N, crop=8, flip=True,
                    pca_noise_std=0.0)
  assert patches.dtype == np.float32 and patches.shape == (N, 8, 8, 3)
  _check_offsets_and_flips(patches, image, 8)


def test_no_flip_when_disabled():
  image = _coded_image(40, 6)
  stats = _stats(np.zeros((40, 40, 3)))
  for patches in (_host_draws(image, stats, 500, crop=8, flip=False, pca_noise_std=0.0),
                  _device(image, stats, 500, crop=8, flip=False, pca_noise_std=0.0)):
    assert not _where(patches, 6, 8)[2].any()


def _alphas(patches, base):
  """The PCA alphas behind each patch of a constant image `base` (zero mean)."""
  noise = patches.reshape(len(patches), -1, 3) - base
  np.testing.assert_allclose(noise, np.broadcast_to(noise[:, :1], noise.shape),
                             atol=1e-4)  # The same vector on every pixel.
  return np.linalg.solve(EIGVEC, noise[:, 0].T).T / EIGVAL


def test_pca_noise_has_the_stated_covariance():
  # noise = eigvec @ (alpha * eigval * 255), alpha ~ N(0, 0.1^2 I): recover alpha.
  image = np.full((12, 12, 3), 100, np.uint8)
  stats = _stats(np.zeros((12, 12, 3)))
  for patches in (_host_draws(image, stats, N, crop=8, flip=True, pca_noise_std=0.1),
                  _device(image, stats, N, crop=8, flip=True, pca_noise_std=0.1)):
    alphas = _alphas(patches, 100.0)
    np.testing.assert_allclose(np.cov(alphas.T), 0.01 * np.eye(3), atol=0.0004)
    np.testing.assert_allclose(alphas.mean(0), 0, atol=0.003)
  # The scale: along the first eigenvector the noise sd is 0.1 * 0.2175 * 255 = 5.55.
  first = np.linalg.solve(EIGVEC, (patches[:, 0, 0] - 100.0).T)[0]
  assert abs(first.std() - 5.546) < 0.1


def test_host_mean_subtraction_is_exact_with_and_without_reflection():
  rng = np.random.default_rng(1)
  image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
  mean = rng.uniform(0, 255, (40, 40, 3)).astype(np.float32)
  aug = augment.HostAugment(_stats(mean), crop_size=32, flip=True, pca_noise_std=0.0)
  centred = image.astype(np.float32) - mean  # §2: subtract, then crop and reflect.
  seen = set()
  for _ in range(40):
    params = aug.sample(rng)
    out = aug.apply(image[..., ::-1] if params.flip else image, params)
    window = centred[params.y:params.y + 32, params.x:params.x + 32]
    np.testing.assert_array_equal(out, window[:, ::-1] if params.flip else window)
    seen.add(params.flip)
  assert seen == {False, True}


def test_device_mean_subtraction_is_exact_with_and_without_reflection():
  # Zero images: each patch is minus the mean's window; a coded mean tells which window.
  mean = _coded_image(40, 6).astype(np.float32)
  mean[..., 2] = np.random.default_rng(2).uniform(0, 255, (40, 40))
  patches = -_device(np.zeros((40, 40, 3), np.uint8), _stats(mean), 400, crop=32,
                     flip=True, pca_noise_std=0.0)
  y, x, flipped = _where(patches, 6, 32)
  assert 0 < flipped.sum() < 400
  for k in range(400):
    window = mean[y[k]:y[k] + 32, x[k]:x[k] + 32]
    np.testing.assert_array_equal(patches[k], window[:, ::-1] if flipped[k] else window)


def test_host_and_device_agree_in_distribution():
  rng = np.random.default_rng(3)
  image = _coded_image(40, 6)
  stats = _stats(rng.uniform(0, 30, (40, 40, 3)))
  kw = dict(crop=8, flip=True, pca_noise_std=0.1)
  host = _host_draws(image, stats, N, **kw)
  device = _device(image, stats, N, **kw)
  # Whole-output moments: per-pixel means and sds of the two modes match.
  np.testing.assert_allclose(host.mean(0), device.mean(0), atol=2.0)
  np.testing.assert_allclose(host.std(0), device.std(0), rtol=0.03)
  # Without noise: the same offset and reflection distributions (total variation).
  kw['pca_noise_std'] = 0.0
  zero = _stats(np.zeros((40, 40, 3)))
  h = _where(_host_draws(image, zero, N, **kw), 6, 8)
  d = _where(_device(image, zero, N, **kw), 6, 8)
  for a, b in zip(h, d):
    pa = np.bincount(a.astype(int), minlength=33) / N
    pb = np.bincount(b.astype(int), minlength=33) / N
    assert 0.5 * np.abs(pa - pb).sum() < 0.03


def test_ten_patches_and_center_patch_windows_at_paper_geometry():
  rng = np.random.default_rng(4)
  images = np.stack([_coded_image(256, 1), rng.integers(0, 256, (256, 256, 3))]).astype(
      np.uint8)
  mean = rng.uniform(0, 255, (256, 256, 3)).astype(np.float32)
  stats = _stats(mean)
  ten = np.asarray(jax.jit(augment.ten_patches, static_argnums=2)(images, stats, 224))
  assert ten.shape == (10, 2, 224, 224, 3) and ten.dtype == np.float32
  centred = images.astype(np.float32) - mean
  corners = [(0, 0), (0, 32), (32, 0), (32, 32), (16, 16)]
  for k, (y, x) in enumerate(corners):
    window = centred[:, y:y + 224, x:x + 224]
    np.testing.assert_array_equal(ten[k], window)
    np.testing.assert_array_equal(ten[k + 5], window[:, :, ::-1])
  # The coded image confirms the top-left pixel of each view: (row, column).
  assert [tuple(images[0, y, x, :2]) for y, x in corners] == [
      (0, 0), (0, 32), (32, 0), (32, 32), (16, 16)]
  centre = np.asarray(augment.center_patch(images, stats, 224))
  np.testing.assert_array_equal(centre, ten[4])
  # Demo geometry: 72 -> 64, centre offset 4.
  small = rng.integers(0, 256, (3, 72, 72, 3)).astype(np.uint8)
  zero = _stats(np.zeros((72, 72, 3)))
  np.testing.assert_array_equal(np.asarray(augment.center_patch(small, zero, 64)),
                                small[:, 4:68, 4:68].astype(np.float32))


def test_torchvision_normalisation_on_host_and_device():
  # torchvision's nets: RGB/255 minus (0.485, 0.456, 0.406), over (0.229, 0.224, 0.225).
  config = default.get_config()
  config.data.mean, config.data.image_size = 'torchvision', 40
  stats = statistics.load_stats(config)
  image = np.random.default_rng(4).integers(0, 256, (40, 40, 3), dtype=np.uint8)
  expected = (image / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
  aug = augment.HostAugment(stats, crop_size=32, flip=False, pca_noise_std=0.0)
  params = aug.sample(np.random.default_rng(0))
  np.testing.assert_allclose(
      aug.apply(image, params),
      expected[params.y:params.y + 32, params.x:params.x + 32], rtol=1e-5, atol=1e-5)
  centre = augment.center_patch(jnp.asarray(image[None]), stats, 32)[0]
  np.testing.assert_allclose(centre, expected[4:36, 4:36], rtol=1e-5, atol=1e-5)
