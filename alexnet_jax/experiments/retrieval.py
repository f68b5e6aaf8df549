"""Figure 4 (§6.1): the training images nearest to a query by their fc7 activations are
of its kind; the same search on raw pixels mostly finds other things.

  python -m alexnet_jax.experiments.retrieval --workdir=runs/alexnet
  python -m alexnet_jax.experiments.retrieval --workdir=runs/alexnet --queries=-1 --k=10

§6.1 uses the last hidden layer: fc7's 4096 outputs after their ReLU, compared by
Euclidean distance. Every image here is what evaluation feeds the net: the centre patch
(§4.1) of the prepared image, minus the mean, in eval mode (no dropout). Its pixels are
the raw-pixel baseline (the mean is the same for every image, so it changes no distance).

Queries: --queries images of data.eval_split, spread evenly over it (-1: all). Searched:
every image of data.train_split, in one pass of the evaluation pipeline over that split.
On the devices (jitted), each batch of training images is embedded (fc7 and pixels), its
squared distances to every query computed and merged into a running top-k per query. So
memory holds queries x (k + batch) distances, never queries x training images, and no
training embedding is kept; the neighbours are kept as indices into the split, and the
montage re-reads those records. The queries' own vectors stay on the devices: 4096 +
crop x crop x 3 floats each, 0.6 GB per 1,000 queries of 224 px (the pixels dominate), so
all 50,000 ILSVRC validation images (--queries=-1) would need 30 GB.

Writes to --out_dir (default WORKDIR/figures), for checkpoint step N:
  retrieval_step<N>_fc7.png, retrieval_step<N>_pixels.png: Figure 4's layout, one row per
    query (--montage of them, spread over the queries): the query, then its k nearest
    training images, framed green when of the query's class, red when not;
  retrieval_step<N>.json: precision@k (the share of the k neighbours that have the
    query's class, averaged over the queries) for fc7 and pixels, chance (the share of
    training images of the query's class), and every query's neighbours and distances;
and prints the precisions. One process (the devices of this host).
"""

import json
import os
import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from PIL import Image

from alexnet_jax.data import augment, decode, pipeline, prepare, sources
from alexnet_jax.experiments import trained_net
from alexnet_jax.run import saved_config
from alexnet_jax.runtime import command_line, errors
from alexnet_jax.training import preflight, sharding

FLAGS = flags.FLAGS
SPACES = ('fc7', 'pixels')
_FRAME = 3  # Picture pixels of the coloured frame around a neighbour.
_GAP = 2  # White pixels between the tiles of a row, and between rows.
_SAME, _OTHER, _QUERY = (0, 170, 0), (200, 0, 0), (255, 255, 255)


class TopK(NamedTuple):
  """The k nearest so far, per query, nearest first: `(queries, k)` each."""
  distances: jax.Array  # Squared Euclidean distances (inf: none yet).
  indices: jax.Array  # Into the searched split (-1: none yet).


def empty_top_k(num_queries: int, k: int) -> TopK:
  return TopK(jnp.full((num_queries, k), jnp.inf, jnp.float32),
              jnp.full((num_queries, k), -1, jnp.int32))


def update_top_k(top: TopK, queries: jax.Array, chunk: jax.Array, chunk_indices: jax.Array,
                 valid: jax.Array) -> TopK:
  """`top` merged with the rows of `chunk` `(b, d)` whose `valid` is True.

  queries: `(q, d)`; chunk_indices: `(b,)`, each row's index in the searched split. Only a
  `(q, k + b)` block of distances exists at a time. Ties keep the lower index.
  """
  # |q - x|^2 = |q|^2 - 2 q.x + |x|^2, the dot at full float32 precision (pixel vectors
  # are long and their squared norms large).
  dots = jnp.dot(queries, chunk.T, precision=jax.lax.Precision.HIGHEST)
  squared = (jnp.sum(queries ** 2, axis=1)[:, None] - 2 * dots
             + jnp.sum(chunk ** 2, axis=1)[None, :])
  squared = jnp.where(valid[None, :], jnp.maximum(squared, 0.0), jnp.inf)
  distances = jnp.concatenate([top.distances, squared], axis=1)
  indices = jnp.concatenate(
      [top.indices, jnp.broadcast_to(chunk_indices.astype(jnp.int32), squared.shape)], axis=1)
  negated, position = jax.lax.top_k(-distances, top.distances.shape[1])
  return TopK(-negated, jnp.take_along_axis(indices, position, axis=1))


def precision_at_k(neighbour_labels: np.ndarray, query_labels: np.ndarray) -> float:
  """The share of neighbours `(q, k)` whose label is their query's `(q,)`, over all."""
  return float(np.mean(neighbour_labels == np.asarray(query_labels)[:, None]))


def query_indices(split_size: int, wanted: int) -> np.ndarray:
  """`wanted` indices spread evenly over a split of `split_size` (-1 or more: all)."""
  if wanted < 0 or wanted >= split_size:
    return np.arange(split_size)
  if wanted == 0:
    raise errors.UserError('--queries=0: ask for at least 1 query image (or -1 for all).')
  return np.linspace(0, split_size - 1, wanted).round().astype(np.int64)


def check_k(config: ml_collections.ConfigDict, k: int) -> None:
  """Fails unless 1 <= k <= the images of data.train_split."""
  train_size = pipeline.num_examples(config, config.data.train_split)
  if not 1 <= k <= train_size:
    raise errors.UserError(f'--k={k}: give 1 to {train_size} (the images of '
                           f"data.train_split={config.data.train_split!r}).")


def _embed_fn(config: ml_collections.ConfigDict, net):
  """(params, uint8 images, stats) -> (fc7 after its ReLU, centre-patch pixels), float32."""
  crop = config.data.crop_size

  def embed(params, images, stats):
    patches = augment.center_patch(images, stats, crop)
    _, sown = net.apply({'params': params}, patches, train=False, mutable=['activations'])
    (fc7,) = sown['activations']['fc7_output']
    return fc7.astype(jnp.float32), patches.reshape(patches.shape[0], -1)

  return embed


def _read(config: ml_collections.ConfigDict, split: str,
          indices) -> tuple[np.ndarray, np.ndarray]:
  """Records `indices` of `split` as the evaluation pipeline decodes them: uint8
  `(n, image_size, image_size, 3)` images and their labels."""
  source = sources.open_split(config, split)
  records = [source[int(i)] for i in indices]
  images = np.stack([decode.decode_to_square(r['image'], config.data.image_size)
                     for r in records])
  return images, np.array([r['label'] for r in records], np.int32)


def _embed_queries(config, embed, mesh: Mesh, params, stats,
                   indices: np.ndarray) -> tuple[dict, np.ndarray]:
  """The query images' {'fc7': (q, 4096), 'pixels': (q, crop*crop*3)}, on the devices, and
  their labels."""
  batch = config.eval.batch_size
  replicated = NamedSharding(mesh, P())
  step = jax.jit(embed, out_shardings=replicated)
  parts, labels = {space: [] for space in SPACES}, []
  for start in range(0, len(indices), batch):
    images, batch_labels = _read(config, config.data.eval_split, indices[start:start + batch])
    labels.append(batch_labels)
    padded = np.zeros((batch, *images.shape[1:]), np.uint8)
    padded[:len(images)] = images
    with jax.set_mesh(mesh):
      out = step(params, sharding.global_batch(mesh, padded), stats)
    for space, vectors in zip(SPACES, out):
      parts[space].append(vectors[:len(images)])
  vectors = {space: jax.device_put(jnp.concatenate(parts[space]), replicated)
             for space in SPACES}
  return vectors, np.concatenate(labels)


def search(config: ml_collections.ConfigDict, net, mesh: Mesh, params, stats,
           indices: np.ndarray, k: int) -> dict:
  """The k nearest training images of each query image (`indices` of data.eval_split),
  by fc7 and by pixels.

  Returns numpy arrays: 'query_labels' `(q,)`, 'train_labels' (every training image's),
  and per space a TopK `(q, k)`.
  """
  check_k(config, k)
  sharding.check_batch(config.eval.batch_size, mesh, 'eval.batch_size')
  embed = _embed_fn(config, net)
  queries, query_labels = _embed_queries(config, embed, mesh, params, stats, indices)

  def step(tops, first_index, batch, params, queries, stats):
    fc7, pixels = embed(params, batch['image'], stats)
    chunk_indices = first_index + jnp.arange(batch['image'].shape[0])
    return {space: update_top_k(tops[space], queries[space], chunk, chunk_indices,
                                batch['mask'])
            for space, chunk in zip(SPACES, (fc7, pixels))}

  step = jax.jit(step, donate_argnums=0, out_shardings=NamedSharding(mesh, P()))
  tops = {space: empty_top_k(len(indices), k) for space in SPACES}
  labels = []
  batches = pipeline.create_eval_iterator(config, split=config.data.train_split)
  with jax.set_mesh(mesh):
    for i, local_batch in enumerate(batches):
      labels.append(local_batch['label'][local_batch['mask']])
      tops = step(tops, i * config.eval.batch_size, sharding.global_batch(mesh, local_batch),
                  params, queries, stats)
  return {'query_labels': query_labels, 'train_labels': np.concatenate(labels),
          **{space: TopK(*jax.device_get(tuple(tops[space]))) for space in SPACES}}


def montage(rows: list[list[np.ndarray]],
            frames: list[list[tuple[int, int, int]]]) -> np.ndarray:
  """Figure 4's layout: row r holds the images `rows[r]` (uint8, all one size), each in a
  frame of colour `frames[r][i]`, the first (the query) set apart by a wider gap."""
  size = rows[0][0].shape[0]
  tile = size + 2 * _FRAME
  columns = len(rows[0])
  picture = np.full((_GAP + len(rows) * (tile + _GAP),
                     _GAP + columns * (tile + _GAP) + 4 * _GAP, 3), 255, np.uint8)
  for r, (images, colours) in enumerate(zip(rows, frames)):
    top = _GAP + r * (tile + _GAP)
    for i, (image, colour) in enumerate(zip(images, colours)):
      left = _GAP + i * (tile + _GAP) + (4 * _GAP if i else 0)
      picture[top:top + tile, left:left + tile] = colour
      picture[top + _FRAME:top + _FRAME + size, left + _FRAME:left + _FRAME + size] = image
  return picture


def _centre(images: np.ndarray, crop: int) -> np.ndarray:
  """The centre patches that were compared (§4.1), for the montage."""
  offset = (images.shape[1] - crop) // 2
  return images[:, offset:offset + crop, offset:offset + crop]


def write_montages(config: ml_collections.ConfigDict, indices: np.ndarray, found: dict,
                   rows: int, prefix: str) -> list[str]:
  """`<prefix>_<space>.png` for fc7 and pixels, `rows` queries spread over the queries;
  returns the paths."""
  shown = np.unique(np.linspace(0, len(indices) - 1, rows).round().astype(int))
  crop = config.data.crop_size
  queries, query_labels = _read(config, config.data.eval_split, indices[shown])
  queries = _centre(queries, crop)
  paths = []
  for space in SPACES:
    neighbours = found[space].indices[shown]
    images, labels = _read(config, config.data.train_split, neighbours.reshape(-1))
    images = _centre(images, crop).reshape(*neighbours.shape, crop, crop, 3)
    labels = labels.reshape(neighbours.shape)
    picture = montage(
        [[query, *row] for query, row in zip(queries, images)],
        [[_QUERY, *(_SAME if l == ql else _OTHER for l in row)]
         for ql, row in zip(query_labels, labels)])
    paths.append(f'{prefix}_{space}.png')
    Image.fromarray(picture).save(paths[-1])
  return paths


def report(config: ml_collections.ConfigDict, indices: np.ndarray, found: dict,
           source: str) -> dict:
  """The JSON's contents: precision@k per space, chance, and every query's neighbours."""
  train_labels, query_labels = found['train_labels'], found['query_labels']
  share = np.bincount(train_labels, minlength=query_labels.max() + 1) / len(train_labels)
  k = found['fc7'].indices.shape[1]
  return {
      'source': source, 'k': k,
      'queries': f'{len(indices)} of {config.data.eval_split!r}',
      'searched': f'{len(train_labels)} of {config.data.train_split!r}',
      'precision_at_k': {space: precision_at_k(train_labels[found[space].indices],
                                               query_labels) for space in SPACES},
      'chance': float(share[query_labels].mean()),
      'per_query': [
          {'index': int(index), 'label': int(label),
           **{f'{space}_neighbours': found[space].indices[q].tolist() for space in SPACES},
           **{f'{space}_distances': [round(float(d), 4) for d in found[space].distances[q]]
              for space in SPACES}}
          for q, (index, label) in enumerate(zip(indices, query_labels))]}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if FLAGS.montage < 1:
    raise errors.UserError(f'--montage={FLAGS.montage}: show at least 1 query.')
  config, out_dir = trained_net.start()
  stats = prepare.ready(config)
  preflight.check_data(config)
  # The flags checked before the restore, which takes a while for a big net.
  check_k(config, FLAGS.k)
  indices = query_indices(pipeline.num_examples(config, config.data.eval_split),
                          FLAGS.queries)
  net, mesh, params, step = trained_net.restore(config, FLAGS.workdir,
                                                None if FLAGS.step < 0 else FLAGS.step)
  stats = jax.device_put(jax.tree.map(lambda x: np.asarray(x, np.float32), stats),
                         NamedSharding(mesh, P()))
  source = f'{os.path.basename(os.path.normpath(FLAGS.workdir))} step {step}'
  print(f'Retrieval (§6.1): {len(indices)} images of {config.data.eval_split!r} against '
        f'every image of {config.data.train_split!r}, k={FLAGS.k}, {source}', flush=True)
  found = search(config, net, mesh, params, stats, indices, FLAGS.k)
  prefix = os.path.join(out_dir, f'retrieval_step{step}')
  summary = report(config, indices, found, source)
  with open(f'{prefix}.json', 'w') as f:
    json.dump(summary, f, indent=2)
  paths = write_montages(config, indices, found, FLAGS.montage, prefix)
  precision = summary['precision_at_k']
  print(f"precision@{FLAGS.k}: fc7 {precision['fc7']:.3f}, pixels {precision['pixels']:.3f} "
        f"(chance {summary['chance']:.3f})")
  print(f'Wrote {paths[0]}, {paths[1]} and {prefix}.json')


if __name__ == '__main__':
  trained_net.define_flags()
  flags.DEFINE_integer('k', 6, 'Neighbours per query (Figure 4 shows 6).')
  flags.DEFINE_integer('queries', 1000, 'Query images, spread evenly over data.eval_split; '
                       '-1: all of them.')
  flags.DEFINE_integer('montage', 5, 'Queries shown in the montages (Figure 4 shows 5).')
  command_line.run(main, saved_config.argv_with_saved_config(sys.argv))
