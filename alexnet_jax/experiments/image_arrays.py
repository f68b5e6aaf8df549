"""One split of an image folder as arrays in memory, for data small enough to hold whole.

`load_split(folder, split)` reads `folder/<split>/<class>/<image files>` (the classes are
the sorted class folders, label i for the i-th, as data/image_folder.py numbers them), decodes
every image with data/decode.py, checks that all share one size (they are used whole,
uncropped) and returns an `ImageArrays`. CIFAR-10's 50,000 training JPEGs (32x32) decode
in seconds (libjpeg-turbo), so nothing is cached.
"""

import os
from typing import NamedTuple

import numpy as np

from alexnet_jax.data import decode
from alexnet_jax.runtime import errors


class ImageArrays(NamedTuple):
  images: np.ndarray  # uint8 (n, h, w, 3), RGB.
  labels: np.ndarray  # int32 (n,).
  classes: tuple[str, ...]  # Label i is classes[i].


def _visible(path: str) -> list[str]:
  return sorted(e for e in os.listdir(path) if not e.startswith('.'))


def _files(folder: str, split: str) -> tuple[tuple[str, ...], list[tuple[int, str]]]:
  """The class names and (label, path) of every file of the split, or a UserError."""
  root = os.path.join(folder, split)
  if not os.path.isdir(root):
    raise errors.UserError(
        f'{root} is not a folder: expected the image folder layout '
        f'{folder}/{split}/<class>/<image files> (for CIFAR-10: tar -xzf '
        f'cifar10-jpeg.tar.gz -C {folder}).')
  classes = tuple(c for c in _visible(root) if os.path.isdir(os.path.join(root, c)))
  if not classes:
    raise errors.UserError(f'{root} has no class folders: expected {root}/<class>/<image '
                           'files>, one folder per class.')
  files = []
  for label, name in enumerate(classes):
    class_dir = os.path.join(root, name)
    found = [os.path.join(class_dir, f) for f in _visible(class_dir)
             if os.path.isfile(os.path.join(class_dir, f))]
    if not found:
      raise errors.UserError(f'Empty class folder {class_dir}: remove it, or add images.')
    files += [(label, path) for path in found]
  return classes, files


def _decode_all(files: list[tuple[int, str]]) -> np.ndarray:
  images = None
  for i, (_, path) in enumerate(files):
    with open(path, 'rb') as f:
      try:
        image = decode.decode_image(f.read())
      except decode.DecodeError as e:
        raise errors.UserError(f'{path} is not a readable image ({e}): remove or replace '
                               'it.') from e
    if images is None:
      images = np.empty((len(files), *image.shape), np.uint8)
    if image.shape != images.shape[1:]:
      raise errors.UserError(
          f'{path} is {image.shape[1]}x{image.shape[0]} but {files[0][1]} is '
          f'{images.shape[2]}x{images.shape[1]}: the images are used whole (no crops), so '
          'all must have one size; resize them to it.')
    images[i] = image
  return images


def load_split(folder: str, split: str) -> ImageArrays:
  """The images of `folder/split` as arrays (see the module docstring)."""
  classes, files = _files(os.path.expanduser(folder), split)
  return ImageArrays(_decode_all(files), np.array([label for label, _ in files], np.int32),
                     classes)
