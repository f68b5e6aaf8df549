"""Grain input pipelines: the training stream and the evaluation pass, per share of a batch.

One job: turn a prepared split (sources.py) into batches of numpy arrays for one share
of each global batch (the rows a process feeds to its devices: `sharding.data_shard`).
The training pipeline is a global shuffle (data.shuffle_seed) repeated forever, cut into
global batches, of which a share takes its block of rows; the §4.1 augmentation is drawn
per image from config.seed and the image's position in the global stream. So the
batches depend on neither the number of processes nor of workers, the shares of an epoch
are disjoint, and the position in the stream is the step: a resume starts the stream at
the step it resumes from (no iterator state to save, nothing tied to the worker count).

Two places for the augmentation (`data.augment_on_device`): on the host, Grain workers
decode, crop and reflect, shipping uint8 patches, and this process turns them into
float32 minus the mean plus colour noise; on the device, the workers only decode and
ship uint8 `image_size` images, and the jitted step calls `augment.device_augment`
(same distribution; the host CPU then does nothing but JPEG decoding).

The batches are made in Grain worker processes, in shared memory (workers.py). The data
must be prepared first (prepare.py); this module only reads.
"""

from absl import logging
import grain
import numpy as np

from alexnet_jax.data import augment, datasets, sources, statistics, workers


def num_examples(config, split: str) -> int:
  """Examples in `split` of the prepared dataset (raises DataMissingError if absent)."""
  return datasets.split_info(sources.dataset_info(config), split,
                             sources.dataset_dir(config)).num_examples


def num_classes(config) -> int:
  """Classes of the prepared dataset (set model.num_classes to this)."""
  return sources.dataset_info(config).features['label'].num_classes


def _padding(index):
  """A record filling the last evaluation batches: decoded as zeros with mask False."""
  del index
  return {'image': None, 'label': 0}


class _DecodeBatch(workers.BatchTransform, grain.transforms.Map):
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


class _CropBatch(workers.BatchTransform, grain.transforms.MapWithIndex):
  """Encoded batch -> uint8 §4.1 patches (reflected) and their draws; runs in the workers.

  Row j of share s (of S) of global batch k is image (k * S + s) * b + j of the global
  stream; its draw is seeded by (seed, that position), so it does not depend on the
  number of processes or workers.
  """

  def __init__(self, size: int, shared_memory: bool, host_augment: augment.HostAugment,
               *, seed: int, shard_index: int, shard_count: int):
    super().__init__(size, shared_memory)
    self._augment, self._seed = host_augment, seed
    self._shard_index, self._shard_count = shard_index, shard_count

  def map_with_index(self, index: int, batch):
    b, crop = len(batch['image']), self._augment.crop_size
    patches, sent = self._empty((b, crop, crop, 3), np.uint8)
    draws = []
    for row, data in enumerate(batch['image']):
      position = (index * self._shard_count + self._shard_index) * b + row
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


def _per_shard(batch_size: int, shard_count: int, field: str) -> int:
  if batch_size % shard_count:
    raise ValueError(f'{field}={batch_size} must be divisible by the number of shares '
                     f'of the batch ({shard_count}, mesh.data or a divisor of it).')
  return batch_size // shard_count


def create_train_iterator(config, *, shard_index: int = 0, shard_count: int = 1,
                          start_batch: int = 0):
  """The infinite training stream of one share of each global batch.

  Global batch k is images kB..(k+1)B-1 of the shuffled, repeated stream (B =
  train.batch_size), and share s of `shard_count` is its rows s*b..(s+1)*b-1 (a process
  reads the share `sharding.data_shard` names): so every row of every global batch holds
  the same image, with the same augmentation, for any number of processes or workers.
  The stream starts at global batch `start_batch`: a resume at step k starts at batch k,
  exactly where the interrupted run was, whatever the process or worker count.

  Yields dicts of numpy arrays, `b = train.batch_size // shard_count`:
    host mode: 'image' float32 `(b, crop, crop, 3)`, augmented pixels (0..255 scale)
      minus the mean; 'label' int32 `(b,)`.
    device mode (`data.augment_on_device`): 'image' uint8 `(b, size, size, 3)`, 'label'.
  """
  d = config.data
  source = sources.open_split(config, d.train_split)
  global_batch = config.train.batch_size
  if len(source) < global_batch:
    raise ValueError(f'The {d.train_split!r} split of {sources.dataset_dir(config)} has '
                     f'{len(source)} examples, fewer than one batch (train.batch_size='
                     f'{global_batch}). Use a smaller batch or more data.')
  batch = _per_shard(global_batch, shard_count, 'train.batch_size')
  ds = grain.MapDataset.source(source).shuffle(seed=d.shuffle_seed).repeat()
  ds = ds.batch(batch, drop_remainder=True, batch_fn=workers.records)[shard_index::shard_count]
  shared_memory = d.worker_count > 0
  if d.augment_on_device:
    ds, finish = ds.map(_DecodeBatch(d.image_size, shared_memory)), None
  else:
    host_augment = augment.HostAugment(statistics.load_stats(config), crop_size=d.crop_size,
                                       flip=d.flip, pca_noise_std=d.pca_noise_std)
    ds = ds.map_with_index(_CropBatch(
        d.image_size, shared_memory, host_augment, seed=config.seed,
        shard_index=shard_index, shard_count=shard_count))
    finish = _NormalizeBatch(host_augment)
  ds = ds[start_batch:]
  logging.info('Training input: %d examples of %r, %d rows per share, %s, %d workers',
               len(source), d.train_split, batch,
               'device augmentation' if d.augment_on_device else 'host augmentation',
               d.worker_count)
  return workers.to_iterator(ds, config, finish)


def create_eval_iterator(config, *, split=None, shard_index: int = 0,
                         shard_count: int = 1):
  """One pass over the whole split: one of `shard_count` disjoint shares, nothing dropped.

  Share s gets examples s, s + S, s + 2S, ... (S = shard_count). Yields dicts
  'image' uint8 `(b, size, size, 3)`, 'label' int32 `(b,)`, 'mask' bool `(b,)` with
  `b = eval.batch_size // shard_count`; rows padding the last batches have mask False.
  Every share has the same number of batches, so a multi-process jitted evaluation
  never waits on a process that has run out.
  """
  d = config.data
  split = split or d.eval_split
  source = sources.open_split(config, split)
  batch = _per_shard(config.eval.batch_size, shard_count, 'eval.batch_size')
  largest_share = -(-len(source) // shard_count)
  num_batches = -(-largest_share // batch)
  real = grain.MapDataset.source(source)[shard_index::shard_count]
  padding = grain.MapDataset.range(num_batches * batch - len(real)).map(_padding)
  ds = grain.MapDataset.concatenate([real, padding]).batch(batch, batch_fn=workers.records)
  ds = ds.map(_DecodeBatch(d.image_size, d.worker_count > 0, with_mask=True))
  return workers.to_iterator(ds, config)
