"""Generates the 'synthetic' source: a small, learnable image-folder dataset of shapes.

One job: write `root/<split>/<class>/<index>.jpg` for `data.train_split` and
`data.eval_split` under `data.data_dir`, deterministically (image i of a split depends only
on the split name and i) and once (a second call finds the completion marker and returns).
The images are then prepared and read like any image folder, so the offline demo and the
training-loop tests run the same code path as ImageNet.

Ten classes of filled or outlined shapes and stripe patterns, each at a random position
and size, in a random colour on a noisy background of another random colour. Every class
is symmetric under horizontal reflection, so the §4.1 flips keep labels valid, and colour
carries no label information, so the net must learn shape.
"""

import os
import shutil

import numpy as np

from alexnet_jax.data import decode

CLASSES = ('disc', 'square', 'triangle', 'ring', 'cross', 'hstripes', 'vstripes',
           'checker', 'diamond', 'frame')
_QUALITY = 95
_MARKER = '.complete'


def root(config) -> str:
  """Where the generated folder for `config` lives (depends on sizes and split names)."""
  d = config.data
  name = (f'{d.image_size}px_{d.train_split}{d.synthetic_train_size}_'
          f'{d.eval_split}{d.synthetic_eval_size}')
  return os.path.join(os.path.expanduser(d.data_dir), 'synthetic_images', name)


def _mask(label: int, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
  """Pixels of shape `label`; dy, dx: offsets from its centre in units of its radius."""
  box = np.maximum(np.abs(dx), np.abs(dy))
  dist = np.hypot(dx, dy)
  inside = box <= 1
  shapes = (
      dist <= 1,
      box <= 0.8,
      (dy >= -0.9) & (dy <= 0.8) & (np.abs(dx) <= 0.55 * (dy + 0.9)),
      (dist >= 0.55) & (dist <= 1),
      inside & ((np.abs(dx) <= 0.25) | (np.abs(dy) <= 0.25)),
      inside & (np.floor((dy + 1) * 2.5) % 2 == 0),
      inside & (np.floor((dx + 1) * 2.5) % 2 == 0),
      inside & ((np.floor((dx + 1) * 2) + np.floor((dy + 1) * 2)) % 2 == 0),
      np.abs(dx) + np.abs(dy) <= 1,
      inside & (box >= 0.6),
  )
  return shapes[label]


def render(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
  """One uint8 `(size, size, 3)` image of class `label`."""
  background = rng.uniform(0, 255, 3)
  foreground = rng.uniform(0, 255, 3)
  while np.abs(foreground - background).max() < 90:  # Keep the shape visible.
    foreground = rng.uniform(0, 255, 3)
  radius = rng.uniform(0.2, 0.35) * size
  cy, cx = rng.uniform(radius * 0.8, size - radius * 0.8, 2)
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
  mask = _mask(label, (yy - cy) / radius, (xx - cx) / radius)
  image = np.where(mask[..., None], foreground, background)
  image += rng.normal(0, 20, image.shape)
  return np.clip(image, 0, 255).astype(np.uint8)


def generate(config) -> str:
  """Writes the dataset for `config` unless already there; returns its root folder."""
  d = config.data
  for field in ('synthetic_train_size', 'synthetic_eval_size'):
    if d[field] < len(CLASSES):
      raise ValueError(f'data.{field}={d[field]}: need at least one image of each of '
                       f'the {len(CLASSES)} classes.')
  out = root(config)
  if os.path.exists(os.path.join(out, _MARKER)):
    return out
  tmp = out + '.incomplete'
  shutil.rmtree(tmp, ignore_errors=True)
  for split, count in ((d.train_split, d.synthetic_train_size),
                       (d.eval_split, d.synthetic_eval_size)):
    for name in CLASSES:
      os.makedirs(os.path.join(tmp, split, name))
    split_key = [ord(ch) for ch in split]
    for i in range(count):
      label = i % len(CLASSES)
      image = render(label, np.random.default_rng(split_key + [i]), d.image_size)
      path = os.path.join(tmp, split, CLASSES[label], f'{i:06d}.jpg')
      with open(path, 'wb') as f:
        f.write(decode.encode_jpeg(image, _QUALITY))
  open(os.path.join(tmp, _MARKER), 'w').close()
  shutil.rmtree(out, ignore_errors=True)
  os.replace(tmp, out)
  return out
