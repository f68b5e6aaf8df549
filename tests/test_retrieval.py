"""experiments/retrieval.py (Figure 4): the running top-k, precision@k, a planted duplicate
found, and the command."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from alexnet_jax.data import decode, prepare, sources, synthetic
from alexnet_jax.experiments import retrieval, trained_net
from alexnet_jax.nn import model
from alexnet_jax.run import checkpointing, saved_config
from alexnet_jax.training import sharding, train_step


def test_the_running_top_k_over_chunks_equals_brute_force():
  rng = np.random.default_rng(0)
  queries, database = rng.normal(size=(7, 5)), rng.normal(size=(50, 5))
  update = jax.jit(retrieval.update_top_k)
  top = retrieval.empty_top_k(7, 4)
  for start in range(0, 56, 8):  # The last chunk is 2 rows and 6 of padding.
    chunk = np.zeros((8, 5))
    rows = database[start:start + 8]
    chunk[:len(rows)] = rows
    valid = np.arange(8) < len(rows)
    top = update(top, queries, chunk, start + np.arange(8), valid)
  squared = ((queries[:, None] - database[None]) ** 2).sum(-1)
  nearest = np.argsort(squared, axis=1)[:, :4]
  np.testing.assert_array_equal(top.indices, nearest)
  np.testing.assert_allclose(top.distances, np.take_along_axis(squared, nearest, 1),
                             rtol=1e-4)


def test_precision_at_k_is_the_share_of_neighbours_of_the_querys_class():
  neighbour_labels = np.array([[1, 1, 2], [0, 3, 3], [5, 5, 5]])
  assert retrieval.precision_at_k(neighbour_labels, [1, 3, 4]) == pytest.approx(4 / 9)


def test_queries_spread_over_the_split():
  np.testing.assert_array_equal(retrieval.query_indices(10, 4), [0, 3, 6, 9])
  np.testing.assert_array_equal(retrieval.query_indices(3, -1), [0, 1, 2])
  np.testing.assert_array_equal(retrieval.query_indices(3, 5), [0, 1, 2])


@pytest.fixture(scope='module')
def planted(tmp_path_factory, tiny_config):
  """An image folder of 4 classes whose validation split holds a copy of training image
  train/c1/3.jpg; returns its config (the tiny test mesh)."""
  root = tmp_path_factory.mktemp('folder')
  for split, count in (('train', 24), ('validation', 8)):
    for i in range(count):
      label = i % 4
      os.makedirs(root / split / f'c{label}', exist_ok=True)
      image = synthetic.render(label, np.random.default_rng([len(split), i]), 72)
      (root / split / f'c{label}' / f'{i}.jpg').write_bytes(decode.encode_jpeg(image, 95))
  shutil.copy(root / 'train' / 'c1' / '13.jpg', root / 'validation' / 'c1' / 'planted.jpg')
  config = tiny_config(str(tmp_path_factory.mktemp('prepared')))
  config.data.source, config.data.folder = 'folder', str(root)
  config.model.num_classes = 4
  config.eval.batch_size = 8
  prepare.prepare(config)
  return config


@pytest.fixture(scope='module')
def untrained_run(planted, tmp_path_factory):
  """A workdir holding the planted config and a checkpoint (step 0) of an untrained net."""
  workdir = tmp_path_factory.mktemp('run')
  state = train_step.create_train_state(planted, model.create_model(planted),
                                        sharding.make_mesh(planted))
  ckpt = checkpointing.Checkpointer(workdir / 'checkpoints', async_save=False)
  ckpt.save(0, state)
  ckpt.close()
  saved_config.save(planted, str(workdir), None)
  return str(workdir)


def _index_of(config, split, file_name):
  names = [r['file_name'] for r in sources.open_split(config, split)]
  return names.index(file_name)


@pytest.mark.slow
def test_a_query_identical_to_a_training_image_finds_it_first(planted, untrained_run):
  net, mesh, params, _ = trained_net.restore(planted, untrained_run)
  stats = jax.device_put(prepare.ready(planted))
  query = _index_of(planted, 'validation', b'planted.jpg')
  found = retrieval.search(planted, net, mesh, params, stats, np.arange(9), k=3)
  duplicate = _index_of(planted, 'train', b'13.jpg')
  assert found['train_labels'].shape == (24,) and found['query_labels'][query] == 1
  for space in retrieval.SPACES:
    assert found[space].indices[query, 0] == duplicate, space
    # Zero up to float32 rounding: squared distances as |a|^2 + |b|^2 - 2ab keep an ulp of
    # the squared norms (1.5e-5 for an untrained net's fc7 on an AMD EPYC, next 4.6e-4).
    assert found[space].distances[query, 0] < 0.1 * found[space].distances[query, 1], space


@pytest.mark.multiprocess
def test_the_command_writes_montages_and_precisions(planted, untrained_run, tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.experiments.retrieval',
       f'--workdir={untrained_run}', '--queries=-1', '--k=3', '--montage=2',
       f'--out_dir={tmp_path}'], capture_output=True, text=True, timeout=150)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert (f"Retrieval (§6.1): 9 images of 'validation' against every image of 'train', "
          f'k=3, {os.path.basename(untrained_run)} step 0') in proc.stdout
  assert 'precision@3: fc7 ' in proc.stdout
  summary = json.load(open(tmp_path / 'retrieval_step0.json'))
  assert summary['searched'] == "24 of 'train'"
  assert [q['index'] for q in summary['per_query']] == list(range(9))
  query = _index_of(planted, 'validation', b'planted.jpg')
  duplicate = _index_of(planted, 'train', b'13.jpg')
  for space in retrieval.SPACES:
    assert 0.0 <= summary['precision_at_k'][space] <= 1.0
    neighbours = [q[f'{space}_neighbours'] for q in summary['per_query']]
    assert np.array(neighbours).shape == (9, 3) and np.max(neighbours) < 24
    assert neighbours[query][0] == duplicate
    # Two rows of 64 px patches framed 3 px, the query then 3 neighbours, gaps of 2 px.
    tile = 64 + 2 * 3
    width, height = Image.open(tmp_path / f'retrieval_step0_{space}.png').size
    assert (width, height) == (2 + 4 * (tile + 2) + 8, 2 + 2 * (tile + 2))
  bad = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.experiments.retrieval',
       f'--workdir={untrained_run}', '--k=500'], capture_output=True, text=True, timeout=150)
  assert bad.returncode == 2 and '--k=500: give 1 to 24' in bad.stderr, bad.stderr[-2000:]
