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
source's fingerprint, so that a changed source is not silently read from an old dataset,
and the images found per class, which a source may check against its published counts
(`count_problems`; `data.allow_partial=True` accepts a deliberate subset).

The console (`say`) gets a few dozen lines however many units: progress at growing
intervals with an ETA, then a summary per split; each unit's line goes to the log.
"""

import abc
import concurrent.futures
import contextlib
import dataclasses
import functools
import glob
import io
import json
import multiprocessing
import os
import re
import shlex
import shutil
import struct
import sys
import tempfile
import time
from typing import Callable, Iterable, Iterator

from absl import logging
from array_record.python import array_record_module
import tensorflow_datasets as tfds
from tensorflow_datasets.core import constants

from alexnet_jax.data import decode
from alexnet_jax.runtime import cache, child_processes, errors

VERSION = '1.0.0'
PREPARE_COMMAND = ('python -m alexnet_jax.data.prepare --config=<your config file> '
                   '[the same --config.data.* overrides as for training]')
Say = Callable[[str], None]  # Prints a console line.
_RECORD_HEADER = struct.Struct('<iH')  # Staging record: label, file-name length.


class DataMissingError(errors.UserError, FileNotFoundError):
  """The data a config asks for is not there; the message says how to get it."""


class SourceChangedError(errors.UserError, ValueError):
  """The prepared dataset was made from other files than the source holds now."""


class LayoutError(errors.UserError, ValueError):
  """The source's files are not laid out as the source reads them (an empty class folder,
  a class that the training split lacks)."""


class DamagedArchiveError(errors.UserError, ValueError):
  """An archive is cut short or unreadable; the message names it and how to get it whole."""


class PartialSourceError(errors.UserError, ValueError):
  """The source holds fewer images or classes than its published counts."""


class SplitError(errors.UserError, ValueError):
  """data.train_split or data.eval_split names no split of the prepared data."""


def split_info(info: tfds.core.DatasetInfo, split: str, where: str):
  """The size of `split` of a prepared dataset (in `where`): a split's name, or TFDS's
  slice of one, 'train[:80%]', for a dataset published with one split (cats_vs_dogs)."""
  try:
    return info.splits[split]
  except (KeyError, ValueError) as e:
    raise SplitError(
        f'Split {split!r} is not in {where}: it has {sorted(info.splits)}, and a part of '
        "one is written as TFDS slices it, e.g. 'train[:80%]' and 'train[80%:]'. Set "
        '--config.data.train_split / --config.data.eval_split.') from e


# A file to convert: (file name, encoded bytes, class name).
Item = tuple[str, bytes, str]


@dataclasses.dataclass(frozen=True)
class Unit:
  """A piece of a split that is converted, and resumed, as a whole."""
  split: str
  name: str  # Unique within the split; names the staging file.
  read: Callable[[], Iterable[Item]]  # Picklable: runs in a worker process.
  size: int  # Bytes read (the ETA's measure: units differ in size).


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
  def prepare(self, say: Say = logging.info) -> str:
    """Builds the dataset (resumable; no-op when done); returns its directory. `say`
    prints its few console lines."""

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
    """Where its dataset was looked for, and where it is if prepared under another
    data.data_dir."""
    here = f'expected a prepared dataset in {self.dataset_dir()}'
    other = [d for d in _prepared_in(self._record_key()) if d != data_dir(self.config)]
    if not other:
      return here
    return (f'{here}; it was prepared with data.data_dir={other[0]}: set '
            f'--config.data.data_dir={other[0]} to use that one')

  def _record_key(self) -> str:
    return os.path.relpath(self.dataset_dir(), data_dir(self.config))

  def note_prepared(self) -> None:
    """Notes its data_dir in the user's cache, for `where` to name to a run looking in
    another; best effort (an unwritable cache only loses the hint)."""
    key, here = self._record_key(), os.path.abspath(data_dir(self.config))
    record = _read_record()
    record[key] = [here, *(d for d in _prepared_in(key) if d != here)]
    path = _record_path()
    try:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path + f'.{os.getpid()}', 'w') as f:
        json.dump(record, f, indent=1)
      os.replace(path + f'.{os.getpid()}', path)
    except OSError as e:
      logging.warning('Could not note the prepared dataset in %s: %s', path, e)

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
    split_info(builder.info, split, self.dataset_dir())
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


def _record_path() -> str:
  # Where the data_dir each dataset was prepared in is noted, to name it to a run that
  # looks in another.
  return os.path.join(cache.cache_dir(), 'prepared_datasets.json')


def _read_record() -> dict[str, list[str]]:
  try:
    with open(_record_path()) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def _prepared_in(key: str) -> list[str]:
  """The data_dirs where the dataset `key` (its path under one) is prepared now."""
  return [d for d in _read_record().get(key, [])
          if os.path.exists(os.path.join(d, key, 'dataset_info.json'))]


def prepare_command() -> str:
  """The prepare command for the config this command was given: its --config and
  --config.data.* arguments (the generic form where it has no --config)."""
  args, given = sys.argv[1:], []
  for i, arg in enumerate(args):
    if arg.startswith(('--config=', '--config.data.')):
      given.append(arg)
    elif arg == '--config' and i + 1 < len(args):
      given.append(f'--config={args[i + 1]}')
  if not any(a.startswith('--config=') for a in given):
    return PREPARE_COMMAND
  return 'python -m alexnet_jax.data.prepare ' + ' '.join(shlex.quote(a) for a in given)


# --- Converting (resumable) ------------------------------------------------------------


def _unit_path(staging: str, unit: Unit) -> str:
  return os.path.join(staging, unit.split, f'{unit.name}.array_record')


def convert_unit(unit: Unit, path: str, *, size: int, quality: int,
                 class_index: dict[str, int]) -> tuple[int, list[str]]:
  """Decodes, resizes (§2) and re-encodes one unit into a staging ArrayRecord file.

  Returns (images written, '<class>/<file>' of those skipped as undecodable). The file
  appears at `path` only once complete, with `path + '.unit.json'` beside it (the skipped
  files, the shorter side of each source image for `size_summary`, and the files found
  per class).
  """
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + '.incomplete'
  writer = array_record_module.ArrayRecordWriter(tmp, 'group_size:1')
  written, skipped, sides, found = 0, [], [], {}
  for file_name, data, class_name in unit.read():
    found[class_name] = found.get(class_name, 0) + 1
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
    json.dump({'skipped': skipped, 'shorter_sides': sides, 'found': found}, f)
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


def _duration(seconds: float) -> str:
  minutes = round(seconds / 60)
  if minutes < 2:
    return f'{seconds:.0f} s'
  return f'{minutes // 60} h {minutes % 60:02d} min' if minutes >= 60 else f'{minutes} min'


class _Progress:
  """Converting's console lines: one when a unit finishes and the last line is older than
  5 s or a twentieth of the time the whole should take, so a few dozen at most.

  The rate is measured from the moment the first `warm_up` units (one per worker) have
  finished: before it, the workers' start-up would make the ETA far too long.
  """

  def __init__(self, say: Say, todo: list[Unit], warm_up: int):
    self._say, self._warm_up = say, warm_up
    self._total = sum(u.size for u in todo) or 1
    self._units, self._done, self._bytes, self._images, self._skipped = len(todo), 0, 0, 0, 0
    self._start = self._last = time.time()
    self._base = None  # (time, bytes) when the warm-up units were done.

  def finished(self, unit: Unit, images: int, skipped: int) -> None:
    self._done += 1
    self._bytes += unit.size
    self._images += images
    self._skipped += skipped
    now = time.time()
    logging.info('[%d/%d] %s/%s: %d images (%d skipped)', self._done, self._units,
                 unit.split, unit.name, images, skipped)
    if self._base is None and self._done >= self._warm_up:
      self._base = (now, self._bytes)
    measured = self._base is not None and now > self._base[0] + 1
    since, done = self._base if measured else (self._start, 0)
    eta = (self._total - self._bytes) * (now - since) / max(self._bytes - done, 1)
    if self._done < self._units and now - self._last < max(5, (now - self._start + eta) / 20):
      return
    self._last = now
    if self._done == self._units:
      when = f'took {_duration(now - self._start)}'
    else:
      when = f'ETA {_duration(eta)}' if measured else 'ETA once every worker has finished one'
    self._say(f'  {self._done:,} of {self._units:,} units, {self._images:,} images '
              f'({self._images / max(now - self._start, 1e-9):,.0f}/s)'
              + (f', {self._skipped:,} undecodable skipped' if self._skipped else '')
              + f'; {when}')


def _convert_all(config, p: Plan, staging: str, dataset: str, say: Say) -> None:
  """Converts every unit not yet staged, in parallel, reporting progress and an ETA."""
  todo = [u for u in p.units if not os.path.exists(_unit_path(staging, u))]
  if not todo:
    return
  processes = config.data.prepare_processes or os.cpu_count()
  say(f'Converting {len(todo):,} of {len(p.units):,} units of {dataset} '
      f'({sum(u.size for u in todo) / 1e9:,.2f} GB) in {processes} processes, into '
      f'{staging}...')
  convert = functools.partial(
      convert_unit, size=config.data.image_size, quality=config.data.jpeg_quality,
      class_index={c: i for i, c in enumerate(p.classes)})
  progress = _Progress(say, todo, warm_up=processes)
  if processes == 1:
    for unit in todo:
      written, skipped = convert(unit, _unit_path(staging, unit))
      progress.finished(unit, written, len(skipped))
    return
  pool = concurrent.futures.ProcessPoolExecutor(
      processes, mp_context=multiprocessing.get_context('spawn'),
      initializer=child_processes.die_with_parent)
  try:
    futures = {pool.submit(convert, u, _unit_path(staging, u)): u for u in todo}
    for future in concurrent.futures.as_completed(futures):
      written, skipped = future.result()
      progress.finished(futures[future], written, len(skipped))
  except BaseException:  # Ctrl-C, SIGTERM (as KeyboardInterrupt), or a failed unit.
    # Stop now, not after every queued unit: finished units stay staged, and a rerun
    # converts only the rest; a unit cut off leaves only its '.incomplete' file.
    for process in list(getattr(pool, '_processes', {}).values()):
      process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    raise
  pool.shutdown()


def _staged_records(p: Plan, staging: str) -> dict[str, dict]:
  """{split: its units' records merged: 'skipped' files, 'shorter_sides', 'found' per class}."""
  merged = {}
  for unit in p.units:
    with open(_unit_path(staging, unit) + '.unit.json') as f:
      record = json.load(f)
    split = merged.setdefault(unit.split, {'skipped': [], 'shorter_sides': [], 'found': {}})
    split['skipped'] += record['skipped']
    split['shorter_sides'] += record['shorter_sides']
    for class_name, n in record['found'].items():
      split['found'][class_name] = split['found'].get(class_name, 0) + n
  return merged


@contextlib.contextmanager
def _temporary_files_in(directory: str):
  """Python's temporary files and folders (TFDS makes one for each new builder and leaves
  it) go into `directory` for a while, and are removed with it."""
  before = tempfile.tempdir
  tempfile.tempdir = directory
  try:
    yield
  finally:
    tempfile.tempdir = before


@contextlib.contextmanager
def temporary_files_removed():
  """Python's temporary files and folders made meanwhile (TFDS leaves one for each builder
  of a catalog dataset not yet prepared) go into a folder of their own, removed after."""
  directory = tempfile.mkdtemp(prefix='alexnet_jax_')
  try:
    with _temporary_files_in(directory):
      yield
  finally:
    shutil.rmtree(directory, ignore_errors=True)


class StagedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Writes converted staging files as a TFDS ArrayRecord dataset; a staged source's
  subclass names it (and so its directory under data.data_dir)."""

  VERSION = tfds.core.Version(VERSION)

  def __init__(self, *, p: Plan, config_name: str, staging: str, image_size: int,
               metadata: dict, **kwargs):
    self._plan, self._staging, self._metadata = p, staging, metadata
    self._image_size = image_size
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
        metadata=tfds.core.MetadataDict(image_size=size, **self._metadata),
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


def split_summaries(info: tfds.core.DatasetInfo, image_size: int) -> list[str]:
  """One console line per split of a prepared dataset: images, classes, what was skipped."""
  metadata = info.metadata or {}
  lines = []
  for split, split_info in info.splits.items():
    line = f'{split}: {split_info.num_examples:,} images'
    found = metadata.get('found_per_class', {}).get(split)
    if found:
      line += (f' in {len(found):,} classes ({min(found.values()):,} to '
               f'{max(found.values()):,} a class)')
    sides = metadata.get('source_shorter_side', {}).get(split)
    if sides:
      line += (f"; source images' shorter side {sides['min']}..{sides['max']} px (median "
               f"{sides['median']}), stored at {image_size}x{image_size}")
    skipped = metadata.get('skipped_files', {}).get(split, [])
    if skipped:
      line += f'; {len(skipped):,} undecodable files skipped: {", ".join(skipped[:5])}'
      line += ', ... (all in the log)' if len(skipped) > 5 else ''
    lines.append(line)
  lines += [f'Partial (data.allow_partial=True): {note}'
            for note in metadata.get('partial', [])]
  return lines


class StagedSource(Source):
  """A source converted here, unit by unit, into its `builder_class`'s dataset under data_dir."""

  builder_class: type[StagedBuilder]

  @abc.abstractmethod
  def config_name(self) -> str:
    """The TFDS builder config: names what was read and encodes image size and quality."""

  @abc.abstractmethod
  def plan(self) -> Plan:
    """Lists what `prepare` will convert; fails fast (missing files, bad layout)."""

  def count_problems(self, classes: tuple[str, ...],
                     found: dict[str, dict[str, int]]) -> list[str]:
    """How the files found ({split: {class: count}}; only the splits counted so far)
    fall short of the source's published counts; none where nothing is published."""
    del classes, found
    return []

  def partial_advice(self) -> str:
    """What to do about a source found short: how to get the whole."""
    return 'Check that every file of the source is there.'

  def checked_counts(self, classes: tuple[str, ...],
                     found: dict[str, dict[str, int]]) -> list[str]:
    """`count_problems`: raised as one paragraph, or returned if data.allow_partial."""
    problems = self.count_problems(classes, found)
    if problems and not self.config.data.allow_partial:
      raise PartialSourceError(
          f'The data of data.source={self.config.data.source!r} falls short of its '
          f'published counts: {"; ".join(problems)}. '
          f'{self.partial_advice()} If this subset is deliberate, rerun with '
          '--config.data.allow_partial=True (what is converted is kept).')
    return problems

  def dataset_dir(self) -> str:
    return os.path.join(data_dir(self.config), self.builder_class.name, self.config_name(),
                        VERSION)

  def staging_dir(self) -> str:
    return os.path.join(data_dir(self.config), f'{self.builder_class.name}_staging',
                        self.config_name())

  def prepare(self, say: Say = logging.info) -> str:
    directory, staging = self.dataset_dir(), self.staging_dir()
    if self.is_prepared():
      self.check_unchanged()
      if os.path.exists(staging):  # Stopped after writing the dataset, before this.
        shutil.rmtree(staging)
      say(f'Already prepared: {directory}')
      return directory
    fingerprint = self.fingerprint()  # Before converting: what was read.
    p = self.plan()
    dataset = f'{self.builder_class.name}/{self.config_name()}'
    _convert_all(self.config, p, staging, dataset, say)
    records = _staged_records(p, staging)
    found = {split: r['found'] for split, r in records.items()}
    metadata = dict(
        skipped_files={split: r['skipped'] for split, r in records.items()},
        source_shorter_side={s: size_summary(r['shorter_sides']) for s, r in records.items()},
        found_per_class=found, partial=self.checked_counts(p.classes, found),
        jpeg_quality=self.config.data.jpeg_quality, source_fingerprint=fingerprint)
    say(f'Writing the dataset into {directory}...')
    # A write stopped by a kill leaves TFDS's 'incomplete.*' folder beside the dataset.
    for leftover in glob.glob(os.path.join(glob.escape(os.path.dirname(directory)),
                                           f'{constants.INCOMPLETE_PREFIX}*_{VERSION}')):
      shutil.rmtree(leftover)
    with _temporary_files_in(staging):
      builder = self.builder_class(p=p, config_name=self.config_name(), staging=staging,
                                   image_size=self.config.data.image_size,
                                   metadata=metadata, data_dir=data_dir(self.config))
      tfds.disable_progress_bar()  # Its bars print escape codes into logs.
      with contextlib.redirect_stdout(io.StringIO()) as printed:  # TFDS prints, not logs.
        builder.download_and_prepare()
    logging.info('TFDS: %s', printed.getvalue().strip())
    shutil.rmtree(staging)
    self.note_prepared()
    return directory
