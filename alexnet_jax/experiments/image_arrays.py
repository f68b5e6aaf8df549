"""One split of an image folder, or of CIFAR-10's official archive, as arrays in memory, for
data small enough to hold whole.

`load_split(source, split)` reads, for a folder, `source/<split>/<class>/<image files>` (the
classes are the sorted class folders, label i for the i-th, as data/image_folder.py numbers
them), decodes every image with data/decode.py, checks that all share one size (they are
used whole, uncropped) and returns an `ImageArrays`. CIFAR-10's 50,000 training JPEGs
(32x32) decode in seconds (libjpeg-turbo), so nothing is cached. For a file, `source` is
CIFAR-10's python archive as published (cifar-10-python.tar.gz): 'train' is its five data
batches, 'test' its test batch, read with an unpickler that builds numpy arrays and
nothing else.
"""

import os
import pickle
import tarfile
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
        f'{folder}/{split}/<class>/<image files>, or the path of CIFAR-10\'s python '
        'archive, cifar-10-python.tar.gz.')
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


class _ArraysOnly(pickle.Unpickler):
  """Unpickles dicts, lists, bytes and numpy arrays; refuses any other class (a pickle can
  name any function to call)."""

  ALLOWED = {('numpy', 'ndarray'), ('numpy', 'dtype'), ('numpy.core.multiarray', '_reconstruct'),
             ('numpy._core.multiarray', '_reconstruct')}

  def find_class(self, module: str, name: str):
    if (module, name) not in self.ALLOWED:
      raise pickle.UnpicklingError(f'{module}.{name} is not part of CIFAR-10\'s batches')
    return super().find_class(module, name)


CIFAR10_BATCHES = {'train': [f'data_batch_{i}' for i in range(1, 6)], 'test': ['test_batch']}


def _cifar10_archive(path: str, split: str) -> ImageArrays:
  """`split` of CIFAR-10's python archive (see the module docstring)."""
  if split not in CIFAR10_BATCHES:
    raise errors.UserError(f'CIFAR-10 has the splits {sorted(CIFAR10_BATCHES)}, not {split!r}.')
  try:
    with tarfile.open(path) as tar:
      def load(name: str) -> dict:
        return _ArraysOnly(tar.extractfile(f'cifar-10-batches-py/{name}'),
                           encoding='bytes').load()
      classes = tuple(n.decode() for n in load('batches.meta')[b'label_names'])
      batches = [load(name) for name in CIFAR10_BATCHES[split]]
  except (tarfile.TarError, KeyError, AttributeError, EOFError, pickle.UnpicklingError) as e:
    raise errors.UserError(
        f'{path} is not CIFAR-10\'s python archive ({type(e).__name__}: {e}): give the '
        'cifar-10-python.tar.gz published at https://www.cs.toronto.edu/~kriz/cifar.html, '
        'as downloaded, or a folder of class folders.') from e
  # Each row holds the red, then the green, then the blue plane of a 32x32 image.
  images = np.concatenate([b[b'data'] for b in batches]).reshape(-1, 3, 32, 32)
  labels = np.concatenate([b[b'labels'] for b in batches]).astype(np.int32)
  return ImageArrays(np.ascontiguousarray(images.transpose(0, 2, 3, 1)), labels, classes)


def load_split(source: str, split: str) -> ImageArrays:
  """The images of `split` of a folder or of CIFAR-10's archive (the module docstring)."""
  source = os.path.expanduser(source)
  if os.path.isfile(source):
    return _cifar10_archive(source, split)
  classes, files = _files(source, split)
  return ImageArrays(_decode_all(files), np.array([label for label, _ in files], np.int32),
                     classes)
