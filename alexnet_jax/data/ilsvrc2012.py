"""The 'imagenet2012' source: ILSVRC-2012 from its official tars, the paper's data (§2).

The official `ILSVRC2012_img_train.tar` (1000 per-class tars `n0xxxxxxx.tar` of JPEGs) and
`ILSVRC2012_img_val.tar` (50,000 flat JPEGs) from `data.manual_dir`. Validation labels come
from `data.val_labels_file`: one wnid per line, line k for
`ILSVRC2012_val_<k as 8 digits>.JPEG` (the ILSVRC-2012 devkit's ground truth in wnid form);
empty means the copy shipped inside tensorflow-datasets. Class index = position of the wnid
in the sorted list of per-class tars (the usual order, the same as TFDS's imagenet2012).
Units: one per class tar, one per 1,000 validation files.

A tar cut short (a download stopped early, a full disk) is found before anything is
converted and named, with the size and checksum of the whole file. The images found are
checked against ILSVRC-2012's published counts, so that a subset is never taken for the
whole; `data.allow_partial=True` accepts a deliberate one.
"""

import collections
import dataclasses
import functools
import hashlib
import io
import os
import re
import tarfile
from typing import Iterator

from absl import logging
import tensorflow_datasets as tfds

from alexnet_jax.data import datasets

TRAIN_TAR = 'ILSVRC2012_img_train.tar'
VAL_TAR = 'ILSVRC2012_img_val.tar'
IMAGENET_URL = 'https://image-net.org/download-images'
_VAL_FILES_PER_UNIT = 1000
_VAL_IMAGE = re.compile(r'ILSVRC2012_val_\d+\.jpe?g', re.IGNORECASE)
# The lists tensorflow-datasets ships for its imagenet2012: the sorted wnids, and the
# validation ground truth.
_TFDS_LISTS = os.path.join(os.path.dirname(tfds.__file__), 'datasets', 'imagenet2012')
# ILSVRC-2012 as published (§2: 1.2 million training images, 50,000 validation images):
# 1,000 classes of 732 to 1,300 training images and exactly 50 validation images each.
CLASSES, TRAIN_IMAGES, VAL_IMAGES = 1000, 1_281_167, 50_000
TRAIN_PER_CLASS, VAL_PER_CLASS = (732, 1300), (50, 50)
_END_OF_ARCHIVE = bytes(2 * tarfile.BLOCKSIZE)  # Two zero blocks end every tar.


@dataclasses.dataclass(frozen=True)
class _Member:
  """A regular file inside a tar, located by byte offset (read without the tar index)."""
  name: str
  offset: int
  size: int


def _published_size(tar_path: str) -> str:
  """The size and SHA-256 of the whole official tar, as TFDS's checksums list them."""
  with open(os.path.join(_TFDS_LISTS, 'checksums.tsv')) as f:
    for line in f:
      url, size, sha256 = line.split()
      if url.endswith('/' + os.path.basename(tar_path)):
        return f'the whole file is {int(size):,} bytes, SHA-256 {sha256}'
  return 'check its size and checksum against those published'


def _damaged(tar_path: str, what: str) -> datasets.DamagedArchiveError:
  return datasets.DamagedArchiveError(
      f'{tar_path} is damaged: {what}. Nothing was prepared from it. Fetch it again from '
      f'{IMAGENET_URL} ({_published_size(tar_path)}; this copy is '
      f'{os.path.getsize(tar_path):,} bytes), then run the prepare command again.')


def _tar_members(path: str) -> list[_Member]:
  """The regular files of a tar, after checking that it is whole: a tar cut between two
  members reads as a shorter tar, so its end-of-archive blocks must be there too."""
  members, last = [], 'its first member'
  try:
    with tarfile.open(path, 'r:') as tar:
      for m in tar:
        last = repr(m.name)
        if m.isfile():
          members.append(_Member(m.name, m.offset_data, m.size))
      end = tar.offset
    with open(path, 'rb') as f:
      f.seek(end)
      whole = f.read(len(_END_OF_ARCHIVE)) == _END_OF_ARCHIVE
  except (tarfile.TarError, EOFError, OSError) as e:
    raise _damaged(path, f'it breaks at or after {last} ({e})') from e
  if not whole:
    raise _damaged(path, f'it ends after {last} without the end-of-archive blocks, so it '
                         'was cut short')
  return members


def _read_member(f, member: _Member) -> bytes:
  f.seek(member.offset)
  return f.read(member.size)


def _read_class_tar(tar_path: str, member: _Member) -> Iterator[datasets.Item]:
  """The JPEGs of one per-class tar inside the ILSVRC-2012 train tar."""
  wnid = os.path.splitext(os.path.basename(member.name))[0]
  with open(tar_path, 'rb') as f:
    inner = io.BytesIO(_read_member(f, member))
  try:
    with tarfile.open(fileobj=inner, mode='r:') as tar:
      for m in tar:
        if m.isfile():
          yield os.path.basename(m.name), tar.extractfile(m).read(), wnid
  except (tarfile.TarError, EOFError) as e:
    raise _damaged(tar_path, f'its member {member.name} is not a readable tar ({e})') from e


def _read_val_files(tar_path: str, members: tuple[_Member, ...],
                    wnids: tuple[str, ...]) -> Iterator[datasets.Item]:
  with open(tar_path, 'rb') as f:
    for member, wnid in zip(members, wnids):
      yield os.path.basename(member.name), _read_member(f, member), wnid


def _val_labels(config) -> list[str]:
  """ILSVRC-2012 validation ground truth: the wnid of val image k on line k."""
  path = os.path.expanduser(config.data.val_labels_file
                            or os.path.join(_TFDS_LISTS, 'validation_labels.txt'))
  if not os.path.exists(path):
    raise datasets.DataMissingError(
        f'data.val_labels_file={path!r} does not exist: it must list one wnid per line, '
        'line k for ILSVRC2012_val_<k>.JPEG.')
  with open(path) as f:
    return [line.strip() for line in f if line.strip()]


class Ilsvrc2012Prepared(datasets.StagedBuilder):
  """ILSVRC-2012 prepared at image_size (§2)."""
  name = 'ilsvrc2012_prepared'


class Ilsvrc2012(datasets.StagedSource):
  """ILSVRC-2012 from the tars in data.manual_dir (§2)."""

  name = 'imagenet2012'
  builder_class = Ilsvrc2012Prepared

  def _tars(self) -> tuple[str, str]:
    manual = datasets.manual_dir(self.config)
    return os.path.join(manual, TRAIN_TAR), os.path.join(manual, VAL_TAR)

  def config_name(self) -> str:
    return f'{self.config.data.image_size}px_q{self.config.data.jpeg_quality}'

  def missing_message(self) -> str:
    manual = datasets.manual_dir(self.config)
    if all(os.path.exists(t) for t in self._tars()):
      return (f'ILSVRC-2012 is not prepared ({self.where()}). Its tars are in {manual}: '
              f'prepare them once with {datasets.prepare_command()} (it resumes if '
              'interrupted).')
    return (f'ILSVRC-2012 is not prepared ({self.where()}). Download {TRAIN_TAR} (138 GB) '
            f'and {VAL_TAR} (6.3 GB) from {IMAGENET_URL} (free account, non-commercial '
            f'terms), put them in {manual} (or set data.manual_dir), then run once: '
            f'{datasets.prepare_command()}. It resumes if interrupted.')

  def fingerprint(self) -> dict | None:
    """The tars' sizes, and the labels file's digest (it labels the validation images)."""
    tars = self._tars()
    if not all(os.path.exists(t) for t in tars):
      return None
    found = {os.path.basename(t): os.path.getsize(t) for t in tars}
    labels = os.path.expanduser(self.config.data.val_labels_file)
    if labels and os.path.exists(labels):
      with open(labels, 'rb') as f:
        found['val_labels_sha1'] = hashlib.sha1(f.read()).hexdigest()
    return found

  def class_names(self) -> list[str]:
    """The 1000 wnids in label order, as tensorflow-datasets lists them."""
    with open(os.path.join(_TFDS_LISTS, 'labels.txt')) as f:
      return f.read().split()

  def plan(self) -> datasets.Plan:
    train_tar, val_tar = self._tars()
    missing = [p for p in (train_tar, val_tar) if not os.path.exists(p)]
    if missing:
      raise datasets.DataMissingError(f'Missing {", ".join(missing)}. '
                                      + self.missing_message())
    class_tars = sorted((m for m in _tar_members(train_tar) if m.name.endswith('.tar')),
                        key=lambda m: m.name)
    if not class_tars:
      raise datasets.LayoutError(
          f'{train_tar} holds no per-class tars (n0xxxxxxx.tar): it is not the ILSVRC-2012 '
          f'training tar. Fetch {TRAIN_TAR} from {IMAGENET_URL}.')
    classes = tuple(os.path.splitext(os.path.basename(m.name))[0] for m in class_tars)
    units = [datasets.Unit('train', wnid, functools.partial(_read_class_tar, train_tar, m),
                           m.size) for wnid, m in zip(classes, class_tars)]
    val_units, val_wnids = self._val_units(classes)
    # Checked early, before hours of converting: the training images are counted then.
    self.checked_counts(classes, {'validation': collections.Counter(val_wnids)})
    units += val_units
    return datasets.Plan('ILSVRC-2012 at the size the paper trains on (§2), re-encoded JPEG.',
                         classes, tuple(units))

  def count_problems(self, classes: tuple[str, ...],
                     found: dict[str, dict[str, int]]) -> list[str]:
    """The classes and images found, against ILSVRC-2012's published counts."""
    problems = []
    if len(classes) != CLASSES:
      problems.append(f'{len(classes):,} classes (per-class tars) of {CLASSES:,}')
    for split, total, (low, high) in (('train', TRAIN_IMAGES, TRAIN_PER_CLASS),
                                      ('validation', VAL_IMAGES, VAL_PER_CLASS)):
      if split not in found:
        continue
      counts = {c: found[split].get(c, 0) for c in classes}
      if sum(counts.values()) != total:
        problems.append(f'{split}: {sum(counts.values()):,} images of {total:,}')
      odd = [f'{c}: {n}' for c, n in counts.items() if not low <= n <= high]
      if odd:
        expected = f'{low}' if low == high else f'{low:,} to {high:,}'
        problems.append(f'{split}: {len(odd):,} classes without {expected} images '
                        f'({", ".join(odd[:3])}{", ..." if len(odd) > 3 else ""})')
    return problems

  def partial_advice(self) -> str:
    train_tar, val_tar = self._tars()
    return (f'If {train_tar} or {val_tar} came incomplete, fetch them again from '
            f'{IMAGENET_URL} ({_published_size(train_tar)}; for the validation tar, '
            f'{_published_size(val_tar).replace("the whole file is ", "")}).')

  def _val_units(self, classes: tuple[str, ...]) -> tuple[list[datasets.Unit], list[str]]:
    """The validation images, labelled by the ground truth, 1,000 to a unit; their labels."""
    train_tar, val_tar = self._tars()
    labels = _val_labels(self.config)
    unknown = sorted(set(labels) - set(classes))
    if unknown:
      raise datasets.LayoutError(
          f'Unknown class(es) {unknown[:5]} in the validation labels '
          f'{self.config.data.val_labels_file or "(TFDS copy)"}: not among the '
          f'{len(classes)} per-class tars of {train_tar}. Set data.val_labels_file to the '
          'ground truth of these tars.')
    val_files, val_wnids = [], []
    for m in sorted(_tar_members(val_tar), key=lambda m: m.name):
      if not _VAL_IMAGE.fullmatch(os.path.basename(m.name)):
        logging.warning('Ignoring %s in %s: not an ILSVRC2012_val_<k>.JPEG image.', m.name,
                        val_tar)
        continue
      val_files.append(m)
      number = re.search(r'(\d+)\.\w+$', m.name)
      if not 1 <= int(number.group(1)) <= len(labels):
        raise datasets.LayoutError(
            f'{m.name} in {val_tar} has no line in the validation labels ({len(labels)} '
            'lines; line k labels ILSVRC2012_val_<k>.JPEG): set data.val_labels_file to '
            'the ground truth of this tar.')
      val_wnids.append(labels[int(number.group(1)) - 1])
    units = []
    for start in range(0, len(val_files), _VAL_FILES_PER_UNIT):
      stop = start + _VAL_FILES_PER_UNIT
      read = functools.partial(_read_val_files, val_tar, tuple(val_files[start:stop]),
                               tuple(val_wnids[start:stop]))
      units.append(datasets.Unit('validation', f'{start:08d}', read,
                                 sum(m.size for m in val_files[start:stop])))
    return units, val_wnids
