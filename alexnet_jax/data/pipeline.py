"""Grain input pipelines: the training stream and the evaluation pass, per process.

One job: turn a prepared split (sources.py) into batches of numpy arrays for this
process. The training pipeline is a global shuffle (data.shuffle_seed) repeated forever,
the §4.1 augmentation drawn per image from config.seed and the image's position in the
global stream, then this process's every `process_count`-th image: so the batches do not
depend on the number of processes or workers, and every process's slice of an epoch is
disjoint from the others'. Its iterator state (`get_state()`/`set_state()`, JSON-able)
goes into checkpoints with grain's `PyGrainCheckpointSave`/`PyGrainCheckpointRestore`;
it depends on `data.worker_count`, which is why that is fixed in the config.

Two places for the augmentation (`data.augment_on_device`): on the host, Grain workers
decode, crop and reflect, shipping uint8 patches, and this process turns them into
float32 minus the mean plus colour noise; on the device, the workers only decode and
ship uint8 `image_size` images, and the jitted step calls `augment.device_augment`
(same distribution; the host CPU then does nothing but JPEG decoding).

Every batch is assembled in place, one array per batch written row by row (in shared
memory inside a worker): per-image arrays kept alive until a stack, or float32 batches
copied into shared memory, cost more than the JPEG decoding on a small host. A worker
reuses its shared-memory blocks once this process has read them (see `_Blocks`).
"""

import dataclasses
from multiprocessing import shared_memory
import os

from absl import flags
from absl import logging
import grain
import numpy as np

from alexnet_jax.data import augment
from alexnet_jax.data import decode
from alexnet_jax.data import sources
from alexnet_jax.data import statistics

DataStats = statistics.DataStats
DataMissingError = sources.DataMissingError
dataset_info = sources.dataset_info  # Splits, sizes, class names; clear error if missing.
_STATS_BATCH = 32


def num_examples(config, split: str) -> int:
  """Examples in `split` of the prepared dataset (raises DataMissingError if absent)."""
  splits = sources.dataset_info(config).splits
  if split not in splits:
    raise ValueError(f'Split {split!r} is not in {sources.dataset_dir(config)}; it has '
                     f'{sorted(splits)}.')
  return splits[split].num_examples


def num_classes(config) -> int:
  """Classes of the prepared dataset (set model.num_classes to this)."""
  return sources.dataset_info(config).features['label'].num_classes


def load_stats(config) -> DataStats:
  """The mean image and PCA eigenpairs `config` asks for (see statistics.py).

  For the 'synthetic' source they are computed on first use (seconds); for the others a
  missing cache raises DataMissingError saying which command to run.
  """
  if (config.data.source == 'synthetic' and 'dataset' in (config.data.mean,
                                                          config.data.pca_stats)
      and not os.path.exists(statistics.stats_path(config))):
    compute_stats(config)
  return statistics.load_stats(config)


def _records(records) -> dict:
  """Batch function: the encoded images as a list (stacking would pad bytes with zeros)."""
  return {'image': [r['image'] for r in records],
          'label': np.array([r['label'] for r in records], np.int32)}


def _padding(index):
  """A record filling the last evaluation batches: decoded as zeros with mask False."""
  del index
  return {'image': None, 'label': 0}


_HEADER = 64  # Bytes before a block's array: byte 0 says whether the block is free.
_FREE, _IN_USE = 0, 1


@dataclasses.dataclass(frozen=True)
class _BlockRef:
  """What a worker sends for a batch array: the shared-memory block that holds it."""
  name: str
  shape: tuple[int, ...]
  dtype: str


class _Blocks:
  """A worker's shared-memory blocks, each reused once the main process has read it.

  Grain's `SharedMemoryArray` is a new block per batch: here its first write faults in
  zeroed tmpfs pages, the reader's first read maps them again and the unlink frees them,
  19 ms per 19 MB batch on a 2-core VM against 1.2 ms to rewrite a block already mapped
  (measured). So the worker keeps its blocks and sends `_BlockRef`s, and `_Received`, in
  the main process, marks a block free when done with it. Blocks in flight are bounded by
  the prefetch buffers, so a worker holds a handful.
  """

  def __init__(self):
    self._blocks = []

  def empty(self, shape, dtype) -> tuple[np.ndarray, _BlockRef]:
    """A batch array in a free block (a new one if none is), and its reference."""
    dtype = np.dtype(dtype)
    size = _HEADER + int(np.prod(shape)) * dtype.itemsize
    block = next((b for b in self._blocks if b.size == size and b.buf[0] == _FREE), None)
    if block is None:
      block = shared_memory.SharedMemory(create=True, size=size)
      self._blocks.append(block)
    block.buf[0] = _IN_USE
    array = np.ndarray(shape, dtype, buffer=block.buf, offset=_HEADER)
    return array, _BlockRef(block.name, tuple(shape), dtype.str)

  def __getstate__(self):
    return {'_blocks': []}  # Pickled into a worker before any block exists.


class _Received(grain.transforms.Map):
  """In the main process: a worker's batch out of its blocks, which are then freed.

  `finish(batch)` makes the output from views of the blocks (it must not keep them); by
  default the arrays are copied. Each block is opened once and unlinked at once: the
  worker and this process keep their mappings. A block whose reference never arrives (a
  batch still buffered at `set_state` or `close`) is unlinked by Python's resource
  tracker when the program ends.
  """

  def __init__(self, finish=None):
    self._finish = finish
    self._open = {}

  def _view(self, ref: _BlockRef) -> tuple[np.ndarray, shared_memory.SharedMemory]:
    block = self._open.get(ref.name)
    if block is None:
      block = self._open[ref.name] = shared_memory.SharedMemory(ref.name)
      block.unlink()
    return np.ndarray(ref.shape, ref.dtype, buffer=block.buf, offset=_HEADER), block

  def map(self, batch):
    views, blocks = {}, []
    for key, value in batch.items():
      if isinstance(value, _BlockRef):
        views[key], block = self._view(value)
        blocks.append(block)
      else:
        views[key] = value
    if self._finish is None:
      out = {key: np.array(value) for key, value in views.items()}
    else:
      out = self._finish(views)
    for block in blocks:
      block.buf[0] = _FREE
    return out


class _BatchTransform:
  """Shared by the batch transforms: where a batch's arrays are allocated.

  Each transform fills one array per batch row by row, so no per-image array is kept
  alive until a stack (at 600 KB per float32 224x224 patch, that allocation churn halved
  the throughput). In a Grain worker the batch is allocated in one of the worker's
  shared-memory blocks (`_Blocks`) and only its reference is sent.
  """

  def __init__(self, size: int, shared_memory: bool):
    self._size = size
    self._blocks = _Blocks() if shared_memory else None

  def _empty(self, shape, dtype) -> tuple[np.ndarray, np.ndarray | _BlockRef]:
    """A batch array to fill, and what to send for it once filled."""
    if self._blocks is not None:
      return self._blocks.empty(shape, dtype)
    array = np.empty(shape, dtype)
    return array, array

  def _decode(self, data: bytes, channels: str = 'RGB') -> np.ndarray:
    try:
      return decode.decode_to_square(data, self._size, channels=channels)
    except decode.DecodeError as e:
      raise decode.DecodeError(f'{e}. Prepared datasets hold only decodable images: '
                               'prepare the data again.') from e


class _DecodeBatch(_BatchTransform, grain.transforms.Map):
  """Encoded batch -> uint8 `(b, size, size, 3)` images (device mode, evaluation).

  Rows whose image is None are evaluation padding: zeros, and 'mask' False.
  """

  def __init__(self, size: int, shared_memory: bool, with_mask: bool = False):
    super().__init__(size, shared_memory)
    self._with_mask = with_mask

  def map(self, batch):
    images, sent = self._empty((len(batch['image']), self._size, self._size, 3), np.uint8)
    mask = np.array([data is not None for data in batch['image']])
    for row, data in enumerate(batch['image']):
      images[row] = self._decode(data) if data is not None else 0
    out = {'image': sent, 'label': batch['label']}
    if self._with_mask:
      out['mask'] = mask
    return out


class _CropBatch(_BatchTransform, grain.transforms.MapWithIndex):
  """Encoded batch -> uint8 §4.1 patches (reflected) and their draws; runs in the workers.

  Row j of this process's batch k is image (k * P + p) * b + j of the global stream;
  its draw is seeded by (seed, that position), so it does not depend on the number of
  processes or workers.
  """

  def __init__(self, size: int, shared_memory: bool, host_augment: augment.HostAugment,
               *, seed: int, process_index: int, process_count: int):
    super().__init__(size, shared_memory)
    self._augment, self._seed = host_augment, seed
    self._process_index, self._process_count = process_index, process_count

  def map_with_index(self, index: int, batch):
    b, crop = len(batch['image']), self._augment.crop_size
    patches, sent = self._empty((b, crop, crop, 3), np.uint8)
    draws = []
    for row, data in enumerate(batch['image']):
      position = (index * self._process_count + self._process_index) * b + row
      params = self._augment.sample(np.random.default_rng([self._seed, position]))
      self._augment.crop(self._decode(data, params.channels), params, out=patches[row])
      draws.append(params)
    return {'patch': sent, 'label': batch['label'],
            'y': np.array([d.y for d in draws], np.int32),
            'x': np.array([d.x for d in draws], np.int32),
            'flip': np.array([d.flip for d in draws]),
            'rgb_noise': np.stack([d.rgb_noise for d in draws])}


class _NormalizeBatch:
  """uint8 patches -> float32 minus the mean plus colour noise; in the main process."""

  def __init__(self, host_augment: augment.HostAugment):
    self._augment = host_augment

  def __call__(self, batch):
    images = np.empty(batch['patch'].shape, np.float32)
    for row, patch in enumerate(batch['patch']):
      params = augment.CropParams(int(batch['y'][row]), int(batch['x'][row]),
                                  bool(batch['flip'][row]), batch['rgb_noise'][row])
      self._augment.normalize(patch, params, out=images[row])
    return {'image': images, 'label': batch['label']}


class _StatsSums(grain.transforms.Map):
  """A batch of records -> the sums `statistics.write_stats` needs."""

  def __init__(self, size: int):
    self._size = size

  def map(self, records):
    image_sum = np.zeros((self._size, self._size, 3))
    pixel_sum, outer_sum = np.zeros(3), np.zeros((3, 3))
    for data in records['image']:
      image = decode.decode_to_square(data, self._size)
      image_sum += image
      pixels = image.reshape(-1, 3) / 255.0
      pixel_sum += pixels.sum(axis=0)
      outer_sum += pixels.T @ pixels
    return {'count': len(records['image']), 'image_sum': image_sum,
            'pixel_sum': pixel_sum, 'outer_sum': outer_sum}


def compute_stats(config) -> str:
  """One pass over the training split (§2 mean image, §4.1 RGB PCA); returns the file."""
  source = sources.open_split(config, config.data.train_split)
  ds = (grain.MapDataset.source(source)
        .batch(_STATS_BATCH, batch_fn=_records)
        .map(_StatsSums(config.data.image_size)))
  count, image_sum, pixel_sum, outer_sum = 0, 0.0, 0.0, 0.0
  for i, part in enumerate(_to_iterator(ds, config)):
    count += part['count']
    image_sum = image_sum + part['image_sum']
    pixel_sum = pixel_sum + part['pixel_sum']
    outer_sum = outer_sum + part['outer_sum']
    if i % 1000 == 0:
      logging.info('Mean image and PCA: %d of %d training images', count, len(source))
  return statistics.write_stats(config, count, image_sum, pixel_sum, outer_sum)


def _per_process(batch_size: int, process_count: int, field: str) -> int:
  if batch_size % process_count:
    raise ValueError(f'{field}={batch_size} must be divisible by the number of '
                     f'processes ({process_count}).')
  return batch_size // process_count


def _to_iterator(ds: grain.MapDataset, config, finish=None):
  """Batched MapDataset -> iterator, decoded in `data.worker_count` processes.

  `finish(batch)`, if given, makes each output batch in this process from what the
  workers send.
  """
  # Elements here are whole batches: keep the in-process read-ahead to a few of them.
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2))
  if config.data.worker_count:
    if not flags.FLAGS.is_parsed():
      # Grain's workers read absl flags. Outside an absl app (pytest, a notebook), use
      # their defaults rather than fail in the worker.
      flags.FLAGS.mark_as_parsed()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=config.data.worker_count,
        per_worker_buffer_size=config.data.worker_buffer_size))
    it_ds = it_ds.map(_Received(finish))
  elif finish is not None:
    it_ds = it_ds.map(finish)
  return iter(it_ds)


def create_train_iterator(config, *, process_index: int = 0, process_count: int = 1,
                          start_batch: int = 0):
  """The infinite training stream of this process's share of each global batch.

  Global batch k is images kB..(k+1)B-1 of the shuffled, repeated stream (B =
  train.batch_size), and process p gets its rows p*b..(p+1)*b-1: so every row of every
  global batch holds the same image, with the same augmentation, for any number of
  processes or workers. The stream starts at global batch `start_batch` (a resume).

  Yields dicts of numpy arrays, `b = train.batch_size // process_count`:
    host mode: 'image' float32 `(b, crop, crop, 3)`, augmented pixels (0..255 scale)
      minus the mean; 'label' int32 `(b,)`.
    device mode (`data.augment_on_device`): 'image' uint8 `(b, size, size, 3)`, 'label'.
  The iterator is checkpointable (`get_state()` / `set_state()`) and resumes exactly.
  """
  d = config.data
  source = sources.open_split(config, d.train_split)
  global_batch = config.train.batch_size
  if len(source) < global_batch:
    raise ValueError(f'The {d.train_split!r} split of {sources.dataset_dir(config)} has '
                     f'{len(source)} examples, fewer than one batch (train.batch_size='
                     f'{global_batch}). Use a smaller batch or more data.')
  batch = _per_process(global_batch, process_count, 'train.batch_size')
  ds = grain.MapDataset.source(source).shuffle(seed=d.shuffle_seed).repeat()
  ds = ds.batch(batch, drop_remainder=True, batch_fn=_records)[process_index::process_count]
  shared_memory = d.worker_count > 0
  if d.augment_on_device:
    ds, finish = ds.map(_DecodeBatch(d.image_size, shared_memory)), None
  else:
    host_augment = augment.HostAugment(load_stats(config), crop_size=d.crop_size,
                                       flip=d.flip, pca_noise_std=d.pca_noise_std)
    ds = ds.map_with_index(_CropBatch(
        d.image_size, shared_memory, host_augment, seed=config.seed,
        process_index=process_index, process_count=process_count))
    finish = _NormalizeBatch(host_augment)
  ds = ds[start_batch:]
  logging.info('Training input: %d examples of %r, %d per process batch, %s, %d workers',
               len(source), d.train_split, batch,
               'device augmentation' if d.augment_on_device else 'host augmentation',
               d.worker_count)
  return _to_iterator(ds, config, finish)


def create_eval_iterator(config, *, split=None, process_index: int = 0,
                         process_count: int = 1):
  """One pass over the whole split: this process's disjoint share, nothing dropped.

  Process p gets examples p, p + P, p + 2P, ... (P = process_count). Yields dicts
  'image' uint8 `(b, size, size, 3)`, 'label' int32 `(b,)`, 'mask' bool `(b,)` with
  `b = eval.batch_size // process_count`; rows padding the last batches have mask False.
  Every process yields the same number of batches, so a multi-process jitted evaluation
  never waits on a process that has run out.
  """
  d = config.data
  split = split or d.eval_split
  source = sources.open_split(config, split)
  batch = _per_process(config.eval.batch_size, process_count, 'eval.batch_size')
  largest_share = -(-len(source) // process_count)
  num_batches = -(-largest_share // batch)
  real = grain.MapDataset.source(source)[process_index::process_count]
  padding = grain.MapDataset.range(num_batches * batch - len(real)).map(_padding)
  ds = grain.MapDataset.concatenate([real, padding]).batch(batch, batch_fn=_records)
  ds = ds.map(_DecodeBatch(d.image_size, d.worker_count > 0, with_mask=True))
  return _to_iterator(ds, config)
