"""The 'folder' source, an image folder `data.folder/<split>/<class>/<file>`, and 'synthetic'.

Classes are the sorted class folders of the training split (Imagenette, CIFAR-10 as JPEG,
Dogs vs Cats, your own data); label i everywhere is the i-th. Units: one per class folder of
each split. 'synthetic' is a folder generated on first use (synthetic.py), then read as
any other, so the offline demo and the tests run the path ImageNet runs.
"""

import functools
import glob
import hashlib
import os
from typing import Iterator

from alexnet_jax.data import datasets, synthetic


def _read_class_folder(folder: str, files: tuple[str, ...]) -> Iterator[datasets.Item]:
  class_name = os.path.basename(folder)
  for name in files:
    with open(os.path.join(folder, name), 'rb') as f:
      yield name, f.read(), class_name


def _visible_entries(path: str) -> list[str]:
  return sorted(e for e in os.listdir(path) if not e.startswith('.'))


def _class_dirs(root: str, train_split: str) -> dict[str, list[str]]:
  """{split: its class folders}, after checking that the training split is there."""
  splits = [s for s in _visible_entries(root) if os.path.isdir(os.path.join(root, s))]
  if train_split not in splits:
    raise datasets.LayoutError(
        f'{root} has no training split folder {train_split!r} (data.train_split); it has '
        f'{splits}. Expected root/<split>/<class>/<image files>: set '
        '--config.data.train_split to one of them, or move the images there.')
  class_dirs = {}
  for split in splits:
    split_dir = os.path.join(root, split)
    class_dirs[split] = [c for c in _visible_entries(split_dir)
                         if os.path.isdir(os.path.join(split_dir, c))]
  return class_dirs


class ImageFolderPrepared(datasets.StagedBuilder):
  """An image folder (or the synthetic one) prepared at image_size (§2)."""
  name = 'image_folder_prepared'


class ImageFolder(datasets.StagedSource):
  """The image folder data.folder."""

  name = 'folder'
  builder_class = ImageFolderPrepared

  def root(self) -> str:
    return self.config.data.folder

  def config_name(self) -> str:
    """The folder's name and a digest of its absolute path, so that two folders of the
    same name get two datasets."""
    root = os.path.abspath(os.path.expanduser(self.root()))
    digest = hashlib.sha1(root.encode()).hexdigest()[:8]
    d = self.config.data
    return (f'{datasets.slug(os.path.basename(root))}_{digest}_'
            f'{d.image_size}px_q{d.jpeg_quality}')

  def missing_message(self) -> str:
    folder = self.config.data.folder
    if not folder or not os.path.isdir(os.path.expanduser(folder)):
      return (f'The image folder data.folder={folder!r} does not exist. Set '
              '--config.data.folder to a folder holding <split>/<class>/<image files> '
              f'(e.g. train/ and val/), then run: {datasets.prepare_command()}.')
    return (f'The image folder data.folder={folder!r} is not prepared ({self.where()}). '
            f'It must hold <split>/<class>/<image files>; then run: '
            f'{datasets.prepare_command()}.')

  def fingerprint(self) -> dict | None:
    """The file count and bytes of each class folder."""
    root = os.path.expanduser(self.root())
    if not os.path.isdir(root):
      return None
    found = {}
    for folder in glob.glob(os.path.join(glob.escape(root), '*', '*', '')):  # split/class/
      sizes = [e.stat().st_size for e in os.scandir(folder)
               if e.is_file() and not e.name.startswith('.')]
      found[os.path.relpath(folder, root)] = [len(sizes), sum(sizes)]
    return found

  def plan(self) -> datasets.Plan:
    root = os.path.expanduser(self.root())
    if not root or not os.path.isdir(root):
      raise datasets.DataMissingError(self.missing_message())
    train_split = self.config.data.train_split
    class_dirs = _class_dirs(root, train_split)
    classes = tuple(class_dirs[train_split])
    if not classes:
      raise datasets.LayoutError(
          f'{os.path.join(root, train_split)} has no class folders: put the training '
          'images in one folder per class, <split>/<class>/<image files>.')
    units = []
    for split, names in class_dirs.items():
      unknown = sorted(set(names) - set(classes))
      if unknown:
        raise datasets.LayoutError(
            f'Unknown class folder(s) {unknown} in {os.path.join(root, split)}: not among '
            f'the classes of the training split {train_split!r}. Remove them, or add them '
            'to the training split too (the classes are its folders).')
      for class_name in names:
        folder = os.path.join(root, split, class_name)
        files = {e.name: e.stat().st_size for e in os.scandir(folder)
                 if e.is_file() and not e.name.startswith('.')}
        if not files:
          raise datasets.LayoutError(
              f'Empty class folder {folder}: every class folder needs images. Remove it '
              '(from every split), or add its images; then run the prepare command again.')
        units.append(datasets.Unit(split, datasets.slug(class_name),
                                   functools.partial(_read_class_folder, folder,
                                                     tuple(sorted(files))),
                                   sum(files.values())))
    return datasets.Plan(f'Image folder {os.path.abspath(root)}.', classes, tuple(units))


class Synthetic(ImageFolder):
  """The generated folder of synthetic.py, prepared as any image folder."""

  name = 'synthetic'
  generated_on_first_use = True

  def root(self) -> str:
    return synthetic.root(self.config)

  def missing_message(self) -> str:
    return (f'The synthetic dataset is not generated ({self.where()}). Run: '
            f'{datasets.prepare_command()}.')

  def fingerprint(self) -> dict | None:
    """None: generated from the config alone, it cannot change under its dataset."""
    return None

  def plan(self) -> datasets.Plan:
    synthetic.generate(self.config)  # Preparing is its first use: generated here, once.
    return super().plan()
