"""TFDS builders for every data source, and opening their splits as ArrayRecord sources.

One job: get a source's images, once, into TFDS ArrayRecord files holding the paper's
`image_size x image_size` JPEGs (§2: shorter side rescaled, central square, re-encoded at
`data.jpeg_quality`), and open them again without TensorFlow. Sources (`data.source`):

- 'imagenet2012': the official `ILSVRC2012_img_train.tar` (1000 per-class tars
  `n0xxxxxxx.tar` of JPEGs) and `ILSVRC2012_img_val.tar` (50,000 flat JPEGs) from
  `data.manual_dir`. Validation labels come from `data.val_labels_file`: one wnid per
  line, line k for `ILSVRC2012_val_<k as 8 digits>.JPEG` (the ILSVRC-2012 devkit's
  ground truth in wnid form); empty means the copy shipped inside tensorflow-datasets.
  Class index = position of the wnid in the sorted list of per-class tars (the usual
  order, the same as TFDS's imagenet2012).
- 'folder': `data.folder/<split>/<class>/<file>`; classes are the sorted class folders of
  the training split (Imagenette, CIFAR-10 as JPEG, Dogs vs Cats, your own data).
- 'synthetic': a generated image folder (see synthetic.py), then as 'folder'.
- 'tfds': a TFDS catalog dataset `data.name` prepared as ArrayRecord (images are resized
  to `image_size` when read, not stored resized).

Preparing is resumable: the source is cut into units (one per class tar, per 1,000
validation files, per class folder), each converted in a worker process into a staging
ArrayRecord file that is renamed into place only when complete; a restart converts only
the missing units. Then TFDS writes the dataset from the staging files (minutes) and the
staging files are deleted. Undecodable files are skipped, logged by name and listed in
the dataset's metadata (`skipped_files`); they never shift the labels of the others. The
metadata also records the source images' shorter sides (`source_shorter_side`: min,
median, max per split), so that a run can say when image_size upscales them.
"""

import concurrent.futures
import contextlib
import dataclasses
import functools
import glob
import hashlib
import io
import json
import multiprocessing
import os
import re
import shutil
import struct
import tarfile
import time
from typing import Callable, Iterable, Iterator

from absl import logging
from array_record.python import array_record_module
import tensorflow_datasets as tfds

from alexnet_jax.data import decode, synthetic
from alexnet_jax.runtime import child_processes, errors

TRAIN_TAR = 'ILSVRC2012_img_train.tar'
VAL_TAR = 'ILSVRC2012_img_val.tar'
IMAGENET_URL = 'https://image-net.org/download-images'
_VERSION = '1.0.0'
_VAL_FILES_PER_UNIT = 1000
_VAL_IMAGE = re.compile(r'ILSVRC2012_val_\d+\.jpe?g', re.IGNORECASE)
_RECORD_HEADER = struct.Struct('<iH')  # Staging record: label, file-name length.


class DataMissingError(errors.UserError, FileNotFoundError):
  """The data a config asks for is not there; the message says how to get it."""


class SourceChangedError(errors.UserError, ValueError):
  """The prepared dataset was made from other files than the source holds now."""


# A file to convert: (file name, encoded bytes, class name).
Item = tuple[str, bytes, str]


@dataclasses.dataclass(frozen=True)
class Unit:
  """A piece of a split that is converted, and resumed, as a whole."""
  split: str
  name: str  # Unique within the split; names the staging file.
  read: Callable[[], Iterable[Item]]  # Picklable: runs in a worker process.


@dataclasses.dataclass(frozen=True)
class Plan:
  """What `prepare` converts: the dataset's identity, classes and units."""
  name: str  # TFDS dataset name.
  config_name: str  # TFDS builder config (encodes image size and JPEG quality).
  description: str
  classes: tuple[str, ...]
  units: tuple[Unit, ...]


def _data_dir(config) -> str:
  return os.path.expanduser(config.data.data_dir)


def _manual_dir(config) -> str:
  return os.path.expanduser(
      config.data.manual_dir or os.path.join(_data_dir(config), 'downloads', 'manual'))


def _slug(text: str) -> str:
  return re.sub(r'[^A-Za-z0-9]+', '_', text).strip('_').lower() or 'root'


def _folder_config_name(root: str, config) -> str:
  root = os.path.abspath(os.path.expanduser(root))
  digest = hashlib.sha1(root.encode()).hexdigest()[:8]
  return (f'{_slug(os.path.basename(root))}_{digest}_'
          f'{config.data.image_size}px_q{config.data.jpeg_quality}')


def _prepared_name_and_config(config) -> tuple[str, str]:
  """The TFDS (name, config name) our builders write for `config`."""
  d = config.data
  if d.source == 'imagenet2012':
    return 'ilsvrc2012_prepared', f'{d.image_size}px_q{d.jpeg_quality}'
  if d.source == 'folder':
    return 'image_folder_prepared', _folder_config_name(d.folder, config)
  if d.source == 'synthetic':
    return 'image_folder_prepared', _folder_config_name(synthetic.root(config), config)
  raise ValueError(f"data.source={d.source!r}: expected 'imagenet2012', 'folder', "
                   "'synthetic' or 'tfds'")


def dataset_dir(config) -> str:
  """The directory holding the prepared TFDS dataset (dataset_info.json) for `config`."""
  if config.data.source == 'tfds':
    return str(_catalog_builder(config).data_dir)
  name, config_name = _prepared_name_and_config(config)
  return os.path.join(_data_dir(config), name, config_name, _VERSION)


def is_prepared(config) -> bool:
  return os.path.exists(os.path.join(dataset_dir(config), 'dataset_info.json'))


def _catalog_builder(config):
  if not config.data.name:
    raise ValueError("data.source='tfds' needs data.name, the TFDS catalog name "
                     "(e.g. --config.data.name=cifar10)")
  return tfds.builder(config.data.name, data_dir=_data_dir(config),
                      file_format='array_record')


def missing_data_message(config) -> str:
  """What to download, where to put it and which command to run, for `config`."""
  d = config.data
  prepare = ('python -m alexnet_jax.data.prepare --config=<your config file> '
             '[the same --config.data.* overrides as for training]')
  where = f'expected a prepared dataset in {dataset_dir(config)}'
  if d.source == 'imagenet2012':
    return (f'ILSVRC-2012 is not prepared ({where}). Download {TRAIN_TAR} (138 GB) and '
            f'{VAL_TAR} (6.3 GB) from {IMAGENET_URL} (free account, non-commercial '
            f'terms), put them in {_manual_dir(config)} (or set data.manual_dir), then '
            f'run once: {prepare}. It resumes if interrupted.')
  if d.source == 'folder':
    if not d.folder or not os.path.isdir(os.path.expanduser(d.folder)):
      return (f'The image folder data.folder={d.folder!r} does not exist. Set '
              '--config.data.folder to a folder holding <split>/<class>/<image files> '
              f'(e.g. train/ and val/), then run: {prepare}.')
    return (f'The image folder data.folder={d.folder!r} is not prepared ({where}). '
            f'It must hold <split>/<class>/<image files>; then run: {prepare}.')
  if d.source == 'tfds':
    return (f'TFDS dataset {d.name!r} is not prepared as ArrayRecord in '
            f'{_data_dir(config)} ({where}). Run: {prepare} (downloads it where TFDS '
            'can), or prepare it elsewhere with '
            f"tfds.builder({d.name!r}, file_format='array_record').download_and_prepare()"
            ' and copy it into data.data_dir.')
  return f'The synthetic dataset is not generated ({where}). Run: {prepare}.'


def _read_only_builder(config):
  """The prepared dataset's builder, after the checks (it must be prepared already)."""
  if not is_prepared(config):
    raise DataMissingError(missing_data_message(config))
  builder = tfds.builder_from_directory(dataset_dir(config))
  if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
    raise DataMissingError(
        f'{dataset_dir(config)} holds {builder.info.file_format.value} files; reading '
        'without TensorFlow needs ArrayRecord. Prepare it again with '
        "file_format='array_record' (python -m alexnet_jax.data.prepare does).")
  return builder


def source_fingerprint(config) -> dict | None:
  """What identifies the source's files: sizes (and the labels file's digest) for the
  ILSVRC tars, the file count and bytes of each class folder; None when the source is
  not there (deleted after preparing) or is generated or a TFDS catalog dataset."""
  d = config.data
  if d.source == 'imagenet2012':
    manual = _manual_dir(config)
    tars = [os.path.join(manual, name) for name in (TRAIN_TAR, VAL_TAR)]
    if not all(os.path.exists(t) for t in tars):
      return None
    found = {os.path.basename(t): os.path.getsize(t) for t in tars}
    if d.val_labels_file and os.path.exists(os.path.expanduser(d.val_labels_file)):
      with open(os.path.expanduser(d.val_labels_file), 'rb') as f:
        found['val_labels_sha1'] = hashlib.sha1(f.read()).hexdigest()
    return found
  root = os.path.expanduser(d.folder)
  if d.source != 'folder' or not os.path.isdir(root):
    return None
  found = {}
  for folder in glob.glob(os.path.join(glob.escape(root), '*', '*', '')):  # split/class/
    sizes = [e.stat().st_size for e in os.scandir(folder)
             if e.is_file() and not e.name.startswith('.')]
    found[os.path.relpath(folder, root)] = [len(sizes), sum(sizes)]
  return found


def check_source_unchanged(config) -> None:
  """Raises SourceChangedError if the prepared dataset came from other source files."""
  if not is_prepared(config):
    return
  now = source_fingerprint(config)
  then = dataset_info(config).metadata.get('source_fingerprint')
  if now is None or then is None or now == then:
    return
  changed = sorted(k for k in now.keys() | then.keys() if now.get(k) != then.get(k))
  raise SourceChangedError(
      f'{dataset_dir(config)} was prepared from other files than the source holds now '
      f'(they differ in: {", ".join(changed[:5])}{" ..." if len(changed) > 5 else ""}). '
      f'Delete {dataset_dir(config)} to prepare the source again, or set data.data_dir to '
      'another folder.')


def dataset_info(config) -> tfds.core.DatasetInfo:
  """The prepared dataset's TFDS info (splits, sizes, class names, metadata).

  Raises `DataMissingError`, with instructions, if the dataset is not prepared.
  """
  return _read_only_builder(config).info


def open_split(config, split: str):
  """A random-access source of one split: dicts with 'image' (encoded bytes), 'label'."""
  builder = _read_only_builder(config)
  if split not in builder.info.splits:
    raise ValueError(f'Split {split!r} is not in {dataset_dir(config)}; it has '
                     f'{sorted(builder.info.splits)}. Set data.train_split / '
                     'data.eval_split.')
  return builder.as_data_source(split=split,
                                decoders={'image': tfds.decode.SkipDecoding()})


# --- Reading the sources ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Member:
  """A regular file inside a tar, located by byte offset (read without the tar index)."""
  name: str
  offset: int
  size: int


def _tar_members(path: str) -> list[_Member]:
  with tarfile.open(path, 'r:') as tar:
    return [_Member(m.name, m.offset_data, m.size) for m in tar if m.isfile()]


def _read_member(f, member: _Member) -> bytes:
  f.seek(member.offset)
  return f.read(member.size)


def _read_class_tar(tar_path: str, member: _Member) -> Iterator[Item]:
  """The JPEGs of one per-class tar inside the ILSVRC-2012 train tar."""
  wnid = os.path.splitext(os.path.basename(member.name))[0]
  with open(tar_path, 'rb') as f:
    inner = io.BytesIO(_read_member(f, member))
  with tarfile.open(fileobj=inner, mode='r:') as tar:
    for m in tar:
      if m.isfile():
        yield os.path.basename(m.name), tar.extractfile(m).read(), wnid


def _read_val_files(tar_path: str, members: tuple[_Member, ...],
                    wnids: tuple[str, ...]) -> Iterator[Item]:
  with open(tar_path, 'rb') as f:
    for member, wnid in zip(members, wnids):
      yield os.path.basename(member.name), _read_member(f, member), wnid


def _read_class_folder(folder: str, files: tuple[str, ...]) -> Iterator[Item]:
  class_name = os.path.basename(folder)
  for name in files:
    with open(os.path.join(folder, name), 'rb') as f:
      yield name, f.read(), class_name


def _val_labels(config) -> list[str]:
  """ILSVRC-2012 validation ground truth: the wnid of val image k on line k."""
  path = config.data.val_labels_file
  if not path:
    path = os.path.join(os.path.dirname(tfds.__file__), 'datasets', 'imagenet2012',
                        'validation_labels.txt')
  path = os.path.expanduser(path)
  if not os.path.exists(path):
    raise DataMissingError(f'data.val_labels_file={path!r} does not exist: it must list '
                           'one wnid per line, line k for ILSVRC2012_val_<k>.JPEG.')
  with open(path) as f:
    return [line.strip() for line in f if line.strip()]


def _imagenet_plan(config) -> Plan:
  manual = _manual_dir(config)
  train_tar, val_tar = os.path.join(manual, TRAIN_TAR), os.path.join(manual, VAL_TAR)
  missing = [p for p in (train_tar, val_tar) if not os.path.exists(p)]
  if missing:
    raise DataMissingError(f'Missing {", ".join(missing)}. ' + missing_data_message(config))
  class_tars = sorted((m for m in _tar_members(train_tar) if m.name.endswith('.tar')),
                      key=lambda m: m.name)
  if not class_tars:
    raise ValueError(f'{train_tar} holds no per-class tars (n0xxxxxxx.tar).')
  classes = tuple(os.path.splitext(os.path.basename(m.name))[0] for m in class_tars)
  units = [Unit('train', wnid, functools.partial(_read_class_tar, train_tar, m))
           for wnid, m in zip(classes, class_tars)]

  labels = _val_labels(config)
  unknown = sorted(set(labels) - set(classes))
  if unknown:
    raise ValueError(f'Unknown class(es) {unknown[:5]} in the validation labels '
                     f'{config.data.val_labels_file or "(TFDS copy)"}: not among the '
                     f'{len(classes)} per-class tars of {train_tar}.')
  val_files, val_wnids = [], []
  for m in sorted(_tar_members(val_tar), key=lambda m: m.name):
    if not _VAL_IMAGE.fullmatch(os.path.basename(m.name)):
      logging.warning('Ignoring %s in %s: not an ILSVRC2012_val_<k>.JPEG image.', m.name,
                      val_tar)
      continue
    val_files.append(m)
    number = re.search(r'(\d+)\.\w+$', m.name)
    if not 1 <= int(number.group(1)) <= len(labels):
      raise ValueError(f'{m.name} in {val_tar} has no line in the validation labels '
                       f'({len(labels)} lines; line k labels ILSVRC2012_val_<k>.JPEG).')
    val_wnids.append(labels[int(number.group(1)) - 1])
  for start in range(0, len(val_files), _VAL_FILES_PER_UNIT):
    stop = start + _VAL_FILES_PER_UNIT
    read = functools.partial(_read_val_files, val_tar, tuple(val_files[start:stop]),
                             tuple(val_wnids[start:stop]))
    units.append(Unit('validation', f'{start:08d}', read))
  name, config_name = _prepared_name_and_config(config)
  return Plan(name, config_name,
              'ILSVRC-2012 at the size the paper trains on (§2), re-encoded JPEG.',
              classes, tuple(units))


def _visible_entries(path: str) -> list[str]:
  return sorted(e for e in os.listdir(path) if not e.startswith('.'))


def _folder_plan(config, root: str) -> Plan:
  root = os.path.expanduser(root)
  if not root or not os.path.isdir(root):
    raise DataMissingError(missing_data_message(config))
  splits = [s for s in _visible_entries(root) if os.path.isdir(os.path.join(root, s))]
  train_split = config.data.train_split
  if train_split not in splits:
    raise ValueError(f'{root} has no training split folder {train_split!r} '
                     f'(data.train_split); it has {splits}. Expected '
                     'root/<split>/<class>/<image files>.')
  class_dirs = {}
  for split in splits:
    split_dir = os.path.join(root, split)
    class_dirs[split] = [c for c in _visible_entries(split_dir)
                         if os.path.isdir(os.path.join(split_dir, c))]
  classes = tuple(class_dirs[train_split])
  if not classes:
    raise ValueError(f'{os.path.join(root, train_split)} has no class folders.')
  units = []
  for split in splits:
    unknown = sorted(set(class_dirs[split]) - set(classes))
    if unknown:
      raise ValueError(f'Unknown class folder(s) {unknown} in {os.path.join(root, split)}:'
                       f' not among the classes of the training split {train_split!r}.')
    for class_name in class_dirs[split]:
      folder = os.path.join(root, split, class_name)
      files = tuple(f for f in _visible_entries(folder)
                    if os.path.isfile(os.path.join(folder, f)))
      if not files:
        raise ValueError(f'Empty class folder {folder}: remove it, or add images.')
      units.append(Unit(split, _slug(class_name),
                        functools.partial(_read_class_folder, folder, files)))
  name, config_name = _prepared_name_and_config(config)
  return Plan(name, config_name, f'Image folder {os.path.abspath(root)}.', classes,
              tuple(units))


def plan(config) -> Plan:
  """Lists what `prepare` will convert; fails fast (missing files, bad layout)."""
  source = config.data.source
  if source == 'imagenet2012':
    return _imagenet_plan(config)
  if source == 'folder':
    return _folder_plan(config, config.data.folder)
  if source == 'synthetic':
    return _folder_plan(config, synthetic.generate(config))
  raise ValueError(f'No plan for data.source={source!r}.')


# --- Converting (resumable) ------------------------------------------------------------


def _staging_dir(config, p: Plan) -> str:
  return os.path.join(_data_dir(config), f'{p.name}_staging', p.config_name)


def _unit_path(staging: str, unit: Unit) -> str:
  return os.path.join(staging, unit.split, f'{unit.name}.array_record')


def convert_unit(unit: Unit, path: str, *, size: int, quality: int,
                 class_index: dict[str, int]) -> tuple[int, list[str]]:
  """Decodes, resizes (§2) and re-encodes one unit into a staging ArrayRecord file.

  Returns (images written, '<class>/<file>' of those skipped as undecodable). The file
  appears at `path` only once complete, with `path + '.unit.json'` beside it (the skipped
  files, and the shorter side of each source image, for `size_summary`).
  """
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + '.incomplete'
  writer = array_record_module.ArrayRecordWriter(tmp, 'group_size:1')
  written, skipped, sides = 0, [], []
  for file_name, data, class_name in unit.read():
    try:
      image = decode.decode_to_square(data, size)
    except decode.DecodeError as e:
      logging.warning('Skipping undecodable %s/%s/%s: %s', unit.split, class_name,
                      file_name, e)
      skipped.append(f'{class_name}/{file_name}')
      continue
    sides.append(decode.shorter_side(data) or 0)
    name = file_name.encode()
    writer.write(_RECORD_HEADER.pack(class_index[class_name], len(name)) + name
                 + decode.encode_jpeg(image, quality))
    written += 1
  writer.close()
  with open(path + '.unit.json', 'w') as f:
    json.dump({'skipped': skipped, 'shorter_sides': sides}, f)
  os.replace(tmp, path)
  return written, skipped


def size_summary(sides: list[int]) -> dict[str, int]:
  """The source images' shorter sides: min, median, max (pixels)."""
  ordered = sorted(s for s in sides if s) or [0]
  return {'min': ordered[0], 'median': ordered[len(ordered) // 2], 'max': ordered[-1]}


def _read_staged(path: str) -> Iterator[tuple[int, str, bytes]]:
  reader = array_record_module.ArrayRecordReader(path)
  for record in reader.read_all():
    label, length = _RECORD_HEADER.unpack_from(record)
    start = _RECORD_HEADER.size
    yield label, record[start:start + length].decode(), record[start + length:]
  reader.close()


def _convert_all(config, p: Plan, staging: str) -> None:
  """Converts every unit not yet staged, in parallel, logging progress and ETA."""
  todo = [u for u in p.units if not os.path.exists(_unit_path(staging, u))]
  if not todo:
    return
  logging.info('Converting %d of %d units of %s/%s into %s', len(todo), len(p.units),
               p.name, p.config_name, staging)
  convert = functools.partial(
      convert_unit, size=config.data.image_size, quality=config.data.jpeg_quality,
      class_index={c: i for i, c in enumerate(p.classes)})
  processes = config.data.prepare_processes or os.cpu_count()
  start, images, done = time.time(), 0, 0

  def report(unit, result):
    nonlocal images, done
    images += result[0]
    done += 1
    elapsed = time.time() - start
    eta = elapsed / done * (len(todo) - done)
    logging.info('[%d/%d] %s/%s: %d images (%d skipped); %.0f images/s; ETA %s',
                 done, len(todo), unit.split, unit.name, result[0], len(result[1]),
                 images / max(elapsed, 1e-9), time.strftime('%H:%M:%S', time.gmtime(eta)))

  if processes == 1:
    for unit in todo:
      report(unit, convert(unit, _unit_path(staging, unit)))
    return
  pool = concurrent.futures.ProcessPoolExecutor(
      processes, mp_context=multiprocessing.get_context('spawn'),
      initializer=child_processes.die_with_parent)
  try:
    futures = {pool.submit(convert, u, _unit_path(staging, u)): u for u in todo}
    for future in concurrent.futures.as_completed(futures):
      report(futures[future], future.result())
  except BaseException:  # Ctrl-C, SIGTERM (as KeyboardInterrupt), or a failed unit.
    # Stop now, not after every queued unit: finished units stay staged, and a rerun
    # converts only the rest; a unit cut off leaves only its '.incomplete' file.
    for process in list(getattr(pool, '_processes', {}).values()):
      process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    raise
  pool.shutdown()


class _StagedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Writes converted staging files as a TFDS ArrayRecord dataset."""

  VERSION = tfds.core.Version(_VERSION)

  def __init__(self, *, p: Plan, staging: str, image_size: int, jpeg_quality: int,
               skipped: dict[str, list[str]], source_sides: dict[str, dict],
               fingerprint: dict | None, **kwargs):
    self._plan, self._staging, self._skipped = p, staging, skipped
    self._source_sides, self._fingerprint = source_sides, fingerprint
    self._image_size, self._jpeg_quality = image_size, jpeg_quality
    super().__init__(config=tfds.core.BuilderConfig(name=p.config_name,
                                                    description=p.description),
                     file_format='array_record', **kwargs)

  def _info(self):
    size = self._image_size
    return tfds.core.DatasetInfo(
        builder=self,
        description=self._plan.description,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(size, size, 3), encoding_format='jpeg'),
            'label': tfds.features.ClassLabel(names=list(self._plan.classes)),
            'file_name': tfds.features.Text(),
        }),
        supervised_keys=('image', 'label'),
        metadata=tfds.core.MetadataDict(skipped_files=self._skipped, image_size=size,
                                        jpeg_quality=self._jpeg_quality,
                                        source_shorter_side=self._source_sides,
                                        source_fingerprint=self._fingerprint),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is already staged.
    paths = {}
    for unit in self._plan.units:
      paths.setdefault(unit.split, []).append(_unit_path(self._staging, unit))
    return {split: self._generate_examples(p) for split, p in paths.items()}

  def _generate_examples(self, paths):
    for path in paths:
      unit = os.path.splitext(os.path.basename(path))[0]
      for label, file_name, jpeg in _read_staged(path):
        yield f'{unit}/{file_name}', {'image': jpeg, 'label': label,
                                      'file_name': file_name}


class Ilsvrc2012Prepared(_StagedBuilder):
  """ILSVRC-2012 prepared at image_size (§2)."""
  name = 'ilsvrc2012_prepared'


class ImageFolderPrepared(_StagedBuilder):
  """An image folder (or the synthetic one) prepared at image_size (§2)."""
  name = 'image_folder_prepared'


def prepare(config) -> str:
  """Builds the dataset `config` reads (resumable; no-op when done); returns its dir."""
  if config.data.source == 'tfds':
    builder = _catalog_builder(config)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=_manual_dir(config)))
    return str(builder.data_dir)
  if is_prepared(config):
    check_source_unchanged(config)
    logging.info('Already prepared: %s', dataset_dir(config))
    return dataset_dir(config)
  fingerprint = source_fingerprint(config)  # Before converting: what was read.
  p = plan(config)
  staging = _staging_dir(config, p)
  _convert_all(config, p, staging)
  skipped, sides = {}, {}
  for unit in p.units:
    with open(_unit_path(staging, unit) + '.unit.json') as f:
      record = json.load(f)
    skipped.setdefault(unit.split, []).extend(record['skipped'])
    sides.setdefault(unit.split, []).extend(record['shorter_sides'])
  source_sides = {split: size_summary(s) for split, s in sides.items()}
  builder_class = Ilsvrc2012Prepared if p.name == Ilsvrc2012Prepared.name else (
      ImageFolderPrepared)
  builder = builder_class(p=p, staging=staging, image_size=config.data.image_size,
                          jpeg_quality=config.data.jpeg_quality, skipped=skipped,
                          source_sides=source_sides, fingerprint=fingerprint,
                          data_dir=_data_dir(config))
  tfds.disable_progress_bar()  # Its bars print escape codes into logs; _convert_all logs.
  with contextlib.redirect_stdout(io.StringIO()) as printed:  # TFDS prints, not logs.
    builder.download_and_prepare()
  logging.info('TFDS: %s', printed.getvalue().strip())
  shutil.rmtree(staging)
  total = sum(len(v) for v in skipped.values())
  logging.info('Prepared %s (%d undecodable files skipped)', dataset_dir(config), total)
  return dataset_dir(config)
