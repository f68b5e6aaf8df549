"""What every data source shares: its prepared TFDS ArrayRecord dataset, made and opened.

One job: get a source's images, once, into TFDS ArrayRecord files holding the paper's
`image_size x image_size` JPEGs (§2: shorter side rescaled, central square, re-encoded at
`data.jpeg_quality`), and open them again without TensorFlow. Each source (sources.py lists
them) is a `Source`; those converted here are `StagedSource`s, which only say where their
files are (`plan`) and what their dataset is called.

Preparing a staged source is resumable: it is cut into units (one per class tar, per 1,000
validation files, per class folder), each converted in a worker process into a staging
ArrayRecord file that is renamed into place only when complete; a restart converts only
the missing units. Then TFDS writes the dataset from the staging files (minutes) and the
staging files are deleted. Undecodable files are skipped, logged by name and listed in
the dataset's metadata (`skipped_files`); they never shift the labels of the others. The
metadata also records the source images' shorter sides (`source_shorter_side`: min,
median, max per split), so that a run can say when image_size upscales them, and the
source's fingerprint, so that a changed source is not silently read from an old dataset.
"""

import abc
import concurrent.futures
import contextlib
import dataclasses
import functools
import io
import json
import multiprocessing
import os
import re
import shutil
import struct
import time
from typing import Callable, Iterable, Iterator

from absl import logging
from array_record.python import array_record_module
import tensorflow_datasets as tfds

from alexnet_jax.data import decode
from alexnet_jax.runtime import child_processes, errors

VERSION = '1.0.0'
PREPARE_COMMAND = ('python -m alexnet_jax.data.prepare --config=<your config file> '
                   '[the same --config.data.* overrides as for training]')
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
  """What a staged source converts: its description, classes and units."""
  description: str
  classes: tuple[str, ...]
  units: tuple[Unit, ...]


def data_dir(config) -> str:
  return os.path.expanduser(config.data.data_dir)


def manual_dir(config) -> str:
  return os.path.expanduser(
      config.data.manual_dir or os.path.join(data_dir(config), 'downloads', 'manual'))


def slug(text: str) -> str:
  return re.sub(r'[^A-Za-z0-9]+', '_', text).strip('_').lower() or 'root'


class Source(abc.ABC):
  """One `data.source` as a config sets it up: its prepared dataset, how to make it, and
  what a run asks of it. Each subclass is registered by its `name` in sources.py."""

  name: str  # The data.source value.
  # Prepared by a run's start-up (seconds), not only by the prepare command.
  generated_on_first_use = False

  def __init__(self, config):
    self.config = config

  @abc.abstractmethod
  def dataset_dir(self) -> str:
    """The directory holding the prepared TFDS dataset (dataset_info.json)."""

  @abc.abstractmethod
  def prepare(self) -> str:
    """Builds the dataset (resumable; no-op when done); returns its directory."""

  @abc.abstractmethod
  def missing_message(self) -> str:
    """What to download, where to put it and which command to run."""

  def fingerprint(self) -> dict | None:
    """What identifies the source's files; None where nothing can be compared (the files
    are gone, generated, or a TFDS catalog dataset's)."""
    return None

  def class_names(self) -> list[str] | None:
    """The class names in label order where known without the prepared dataset."""
    return None

  def where(self) -> str:
    return f'expected a prepared dataset in {self.dataset_dir()}'

  def is_prepared(self) -> bool:
    return os.path.exists(os.path.join(self.dataset_dir(), 'dataset_info.json'))

  def _read_only_builder(self):
    """The prepared dataset's builder, after the checks (it must be prepared already)."""
    if not self.is_prepared():
      raise DataMissingError(self.missing_message())
    builder = tfds.builder_from_directory(self.dataset_dir())
    if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
      raise DataMissingError(
          f'{self.dataset_dir()} holds {builder.info.file_format.value} files; reading '
          'without TensorFlow needs ArrayRecord. Prepare it again with '
          "file_format='array_record' (python -m alexnet_jax.data.prepare does).")
    return builder

  def info(self) -> tfds.core.DatasetInfo:
    """The prepared dataset's TFDS info (splits, sizes, class names, metadata).

    Raises `DataMissingError`, with instructions, if the dataset is not prepared.
    """
    return self._read_only_builder().info

  def open_split(self, split: str):
    """A random-access source of one split: dicts with 'image' (encoded bytes), 'label'."""
    builder = self._read_only_builder()
    if split not in builder.info.splits:
      raise ValueError(f'Split {split!r} is not in {self.dataset_dir()}; it has '
                       f'{sorted(builder.info.splits)}. Set data.train_split / '
                       'data.eval_split.')
    return builder.as_data_source(split=split,
                                  decoders={'image': tfds.decode.SkipDecoding()})

  def check_unchanged(self) -> None:
    """Raises SourceChangedError if the prepared dataset came from other source files."""
    if not self.is_prepared():
      return
    now = self.fingerprint()
    then = self.info().metadata.get('source_fingerprint')
    if now is None or then is None or now == then:
      return
    changed = sorted(k for k in now.keys() | then.keys() if now.get(k) != then.get(k))
    raise SourceChangedError(
        f'{self.dataset_dir()} was prepared from other files than the source holds now '
        f'(they differ in: {", ".join(changed[:5])}{" ..." if len(changed) > 5 else ""}). '
        f'Delete {self.dataset_dir()} to prepare the source again, or set data.data_dir '
        'to another folder.')


# --- Converting (resumable) ------------------------------------------------------------


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


def _convert_all(config, p: Plan, staging: str, dataset: str) -> None:
  """Converts every unit not yet staged, in parallel, logging progress and ETA."""
  todo = [u for u in p.units if not os.path.exists(_unit_path(staging, u))]
  if not todo:
    return
  logging.info('Converting %d of %d units of %s into %s', len(todo), len(p.units), dataset,
               staging)
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


class StagedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Writes converted staging files as a TFDS ArrayRecord dataset; a staged source's
  subclass names it (and so its directory under data.data_dir)."""

  VERSION = tfds.core.Version(VERSION)

  def __init__(self, *, p: Plan, config_name: str, staging: str, image_size: int,
               jpeg_quality: int, skipped: dict[str, list[str]],
               source_sides: dict[str, dict], fingerprint: dict | None, **kwargs):
    self._plan, self._staging, self._skipped = p, staging, skipped
    self._source_sides, self._fingerprint = source_sides, fingerprint
    self._image_size, self._jpeg_quality = image_size, jpeg_quality
    super().__init__(config=tfds.core.BuilderConfig(name=config_name,
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


class StagedSource(Source):
  """A source converted here, unit by unit, into its `builder_class`'s dataset under data_dir."""

  builder_class: type[StagedBuilder]

  @abc.abstractmethod
  def config_name(self) -> str:
    """The TFDS builder config: names what was read and encodes image size and quality."""

  @abc.abstractmethod
  def plan(self) -> Plan:
    """Lists what `prepare` will convert; fails fast (missing files, bad layout)."""

  def dataset_dir(self) -> str:
    return os.path.join(data_dir(self.config), self.builder_class.name, self.config_name(),
                        VERSION)

  def prepare(self) -> str:
    config, directory = self.config, self.dataset_dir()
    if self.is_prepared():
      self.check_unchanged()
      logging.info('Already prepared: %s', directory)
      return directory
    fingerprint = self.fingerprint()  # Before converting: what was read.
    p = self.plan()
    name, config_name = self.builder_class.name, self.config_name()
    staging = os.path.join(data_dir(config), f'{name}_staging', config_name)
    _convert_all(config, p, staging, f'{name}/{config_name}')
    skipped, sides = {}, {}
    for unit in p.units:
      with open(_unit_path(staging, unit) + '.unit.json') as f:
        record = json.load(f)
      skipped.setdefault(unit.split, []).extend(record['skipped'])
      sides.setdefault(unit.split, []).extend(record['shorter_sides'])
    builder = self.builder_class(
        p=p, config_name=config_name, staging=staging, image_size=config.data.image_size,
        jpeg_quality=config.data.jpeg_quality, skipped=skipped,
        source_sides={split: size_summary(s) for split, s in sides.items()},
        fingerprint=fingerprint, data_dir=data_dir(config))
    tfds.disable_progress_bar()  # Its bars print escape codes into logs; _convert_all logs.
    with contextlib.redirect_stdout(io.StringIO()) as printed:  # TFDS prints, not logs.
      builder.download_and_prepare()
    logging.info('TFDS: %s', printed.getvalue().strip())
    shutil.rmtree(staging)
    total = sum(len(v) for v in skipped.values())
    logging.info('Prepared %s (%d undecodable files skipped)', directory, total)
    return directory
