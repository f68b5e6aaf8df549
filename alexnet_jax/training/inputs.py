"""What a run reads, made ready on its mesh: the prepared data, its statistics, its batches.

Training and the evaluation of saved nets both start here: the data is prepared if it can
be (else the error says how), the mean image and PCA (§2, §4.1) are put on every device,
and each process reads its own share of every batch.
"""

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from alexnet_jax.data import pipeline, prepare, sources, statistics
from alexnet_jax.training import preflight, sharding


def say(message: str) -> None:
  """A console line from process 0 only."""
  if jax.process_index() == 0:
    print(message, flush=True)


def replicated(mesh: Mesh, tree):
  """`tree` (host values, the same on every process) on every device of the mesh."""
  return jax.device_put(tree, NamedSharding(mesh, P()))


def ready(config: ml_collections.ConfigDict) -> None:
  """Prepares, then checks: the data and its statistics exist after this, or it raised.

  A 'synthetic' source and its statistics are written on first use: processes sharing a
  disk must not write them at once, so the others wait until process 0 has.
  """
  if jax.process_index() == 0:
    source = sources.get(config)
    if source.generated_on_first_use and not source.is_prepared():
      say(f'Generating the {source.name} data, once, in {config.data.data_dir}...')
    prepare.ready(config)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('alexnet_jax: data ready')
  preflight.check_data(config)
  for note in preflight.data_notes(config):
    say(note)


def steps(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
  """(steps per epoch, total steps, steps between evaluations) of the prepared data."""
  num_train = pipeline.num_examples(config, config.data.train_split)
  steps_per_epoch = max(1, num_train // config.train.batch_size)
  total = config.train.num_steps
  if total <= 0:
    total = int(np.ceil(config.train.num_epochs * steps_per_epoch))
  eval_every = config.train.eval_every_steps
  if eval_every <= 0:
    eval_every = steps_per_epoch
  return steps_per_epoch, total, eval_every


def device_stats(config: ml_collections.ConfigDict, mesh: Mesh):
  """The training set's mean image and RGB PCA, on every device."""
  stats = statistics.load_stats(config)
  return replicated(mesh, jax.tree.map(lambda x: np.asarray(x, np.float32), stats))


def train_batches(config: ml_collections.ConfigDict, mesh: Mesh, start_batch: int):
  """This process's share of every training batch from global batch `start_batch` on."""
  index, count = sharding.data_shard(mesh)
  return pipeline.create_train_iterator(config, shard_index=index, shard_count=count,
                                        start_batch=start_batch)


def eval_batches(config: ml_collections.ConfigDict, mesh: Mesh):
  """This process's share of one pass over the evaluation split."""
  index, count = sharding.data_shard(mesh)
  return pipeline.create_eval_iterator(config, shard_index=index, shard_count=count)
