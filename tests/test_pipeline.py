"""Tests for alexnet_jax/data/pipeline.py: batches, shards, resume, evaluation, statistics."""

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from alexnet_jax.configs import default
from alexnet_jax.data import decode, pipeline, prepare, sources, statistics, synthetic

TRAIN, EVAL = 60, 25


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp('data')
  sources.prepare(make_config(path))
  return path


def make_config(data_dir, **data):
  config = default.get_config()
  config.data.source = 'synthetic'
  config.data.data_dir = str(data_dir)
  config.data.image_size = 40
  config.data.crop_size = 32
  config.data.synthetic_train_size = TRAIN
  config.data.synthetic_eval_size = EVAL
  config.data.prepare_processes = 1
  config.data.worker_count = 0
  config.data.mean = 'imagenet'
  config.train.batch_size = 12
  config.eval.batch_size = 8
  config.data.update(data)
  return config


def _digest(image) -> str:
  return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_host_and_device_mode_batches(data_dir):
  host = next(pipeline.create_train_iterator(make_config(data_dir)))
  assert host['image'].shape == (12, 32, 32, 3) and host['image'].dtype == np.float32
  assert host['label'].shape == (12,) and host['label'].dtype == np.int32
  assert -130 < host['image'].min() and host['image'].max() < 160  # 0..255 minus mean.
  device = next(pipeline.create_train_iterator(
      make_config(data_dir, augment_on_device=True)))
  assert device['image'].shape == (12, 40, 40, 3) and device['image'].dtype == np.uint8
  np.testing.assert_array_equal(device['label'], host['label'])  # Same shuffle.


def test_same_seed_same_batches_other_seed_other_batches(data_dir):
  a = _take(pipeline.create_train_iterator(make_config(data_dir)), 3)
  b = _take(pipeline.create_train_iterator(make_config(data_dir)), 3)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['image'], y['image'])
  c = next(pipeline.create_train_iterator(make_config(data_dir, shuffle_seed=1)))
  assert not np.array_equal(a[0]['label'], c['label'])


def test_shares_are_disjoint_and_cover_each_epoch(data_dir):
  config = make_config(data_dir, augment_on_device=True)
  steps = TRAIN // config.train.batch_size  # One epoch: 5 global batches of 12.
  shards = []
  for p in range(2):
    it = pipeline.create_train_iterator(config, shard_index=p, shard_count=2)
    batches = _take(it, 2 * steps)
    assert batches[0]['image'].shape[0] == 6
    shards.append([[_digest(im) for b in batches[e * steps:(e + 1) * steps]
                    for im in b['image']] for e in range(2)])
  source = sources.open_split(config, 'train')
  everything = {_digest(decode.decode_image(source[i]['image'])) for i in range(TRAIN)}
  for epoch in range(2):
    first, second = set(shards[0][epoch]), set(shards[1][epoch])
    assert len(first) == len(second) == TRAIN // 2
    assert not first & second
    assert first | second == everything
  assert shards[0][0] != shards[0][1]  # Each epoch is shuffled anew.


def test_host_augmentation_does_not_depend_on_the_number_of_shares(data_dir):
  config = make_config(data_dir)
  whole = next(pipeline.create_train_iterator(config))['image']
  halves = [next(pipeline.create_train_iterator(config, shard_index=s,
                                                shard_count=2))['image']
            for s in range(2)]
  b = len(halves[0])  # Share s holds rows s*b..(s+1)*b-1 of the global batch.
  np.testing.assert_array_equal(whole[:b], halves[0])
  np.testing.assert_array_equal(whole[b:], halves[1])


def test_a_stream_started_at_a_batch_continues_the_uninterrupted_one(data_dir):
  config = make_config(data_dir)
  uninterrupted = _take(pipeline.create_train_iterator(config), 5)
  for p in range(2):
    started = next(pipeline.create_train_iterator(
        config, shard_index=p, shard_count=2, start_batch=3))
    rows = slice(p * len(started['label']), (p + 1) * len(started['label']))
    np.testing.assert_array_equal(started['image'], uninterrupted[3]['image'][rows])
    np.testing.assert_array_equal(started['label'], uninterrupted[3]['label'][rows])


@pytest.mark.parametrize('before,after', [(2, 0), pytest.param(2, 4, marks=pytest.mark.slow)])
def test_resume_with_another_worker_count_continues_the_batches(data_dir, before, after):
  it = pipeline.create_train_iterator(make_config(data_dir, worker_count=before))
  _take(it, 6)
  resumed = pipeline.create_train_iterator(make_config(data_dir, worker_count=after),
                                           start_batch=6)
  uninterrupted = _take(it, 3)
  for expected, got in zip(uninterrupted, _take(resumed, 3)):
    np.testing.assert_array_equal(expected['image'], got['image'])
    np.testing.assert_array_equal(expected['label'], got['label'])
  assert not np.array_equal(uninterrupted[0]['label'], uninterrupted[1]['label'])


@pytest.mark.parametrize('process_count', [1, 2])
def test_eval_covers_every_example_exactly_once(data_dir, process_count):
  config = make_config(data_dir)  # 25 examples, batch 8: not divisible.
  source = sources.open_split(config, 'validation')
  expected = sorted((_digest(decode.decode_image(source[i]['image'])), source[i]['label'])
                    for i in range(EVAL))
  seen, batch_counts = [], []
  for p in range(process_count):
    batches = list(pipeline.create_eval_iterator(
        config, shard_index=p, shard_count=process_count))
    batch_counts.append(len(batches))
    for b in batches:
      assert b['image'].shape == (8 // process_count, 40, 40, 3)
      assert b['image'].dtype == np.uint8 and b['mask'].dtype == bool
      assert b['label'].dtype == np.int32
      seen += [(_digest(im), l) for im, l, m in zip(b['image'], b['label'], b['mask'])
               if m]
      assert not b['image'][~b['mask']].any()
  assert sorted(seen) == expected
  assert len(set(batch_counts)) == 1  # Every process yields the same number of batches.
  assert batch_counts[0] == {1: 4, 2: 4}[process_count]


def test_eval_with_workers_matches_in_process(data_dir):
  base = list(pipeline.create_eval_iterator(make_config(data_dir)))
  workers = list(pipeline.create_eval_iterator(make_config(data_dir,
                                                                 worker_count=2)))
  assert len(base) == len(workers)
  digests = lambda bs: sorted(_digest(im) for b in bs for im in b['image'][b['mask']])
  assert digests(base) == digests(workers)


def test_dataset_smaller_than_one_batch_is_an_error(data_dir):
  config = make_config(data_dir)
  config.train.batch_size = 64
  with pytest.raises(ValueError, match=r'60 examples, fewer than one batch'):
    pipeline.create_train_iterator(config)


def test_batch_not_divisible_into_shares_is_an_error(data_dir):
  with pytest.raises(ValueError, match=r'eval.batch_size=8 must be divisible'):
    pipeline.create_eval_iterator(make_config(data_dir), shard_count=3)


def test_stats_are_computed_exactly_and_loaded(data_dir):
  config = make_config(data_dir, mean='dataset', pca_stats='dataset')
  prepare.prepare(config)
  stats = statistics.load_stats(config)
  source = sources.open_split(config, 'train')
  images = np.stack([decode.decode_image(source[i]['image']) for i in range(TRAIN)])
  np.testing.assert_allclose(stats.mean_image, images.mean(0), rtol=1e-5)
  eigval, eigvec = np.linalg.eigh(np.cov(images.reshape(-1, 3).T / 255.0, bias=True))
  np.testing.assert_allclose(stats.pca_eigval, eigval[::-1] * 255, rtol=1e-4)
  np.testing.assert_allclose(np.abs(stats.pca_eigvec), np.abs(eigvec[:, ::-1]),
                             atol=1e-4)
  constants = statistics.load_stats(make_config(data_dir, mean='none'))
  assert not constants.mean_image.any() and constants.mean_image.shape == (40, 40, 3)
  np.testing.assert_allclose(constants.pca_eigval,
                             statistics.IMAGENET_PCA_EIGVAL * 255, rtol=1e-6)
  imagenet = statistics.load_stats(make_config(data_dir, mean='imagenet'))
  np.testing.assert_allclose(imagenet.mean_image[7, 3], [123.675, 116.28, 103.53])


def test_missing_stats_say_which_command_to_run(data_dir, tmp_path):
  # The synthetic images read as a plain folder: prepared, but no statistics cached.
  config = make_config(tmp_path, source='folder', mean='dataset',
                       folder=synthetic.root(make_config(data_dir)))
  sources.prepare(config)
  with pytest.raises(sources.DataMissingError,
                     match=r'No cached training-set statistics.*'
                           r'python -m alexnet_jax.data.prepare'):
    statistics.load_stats(config)


@pytest.mark.multiprocess
def test_prepare_command(tmp_path):
  args = [sys.executable, '-m', 'alexnet_jax.data.prepare', '--config=configs/default.py',
          '--config.data.source=synthetic', f'--config.data.data_dir={tmp_path}',
          '--config.data.image_size=24', '--config.data.synthetic_train_size=20',
          '--config.data.synthetic_eval_size=10', '--config.data.worker_count=0']
  out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
  assert 'train: 20 images in 10 classes' in out and 'validation: 10 images' in out
  config = make_config(tmp_path, image_size=24, synthetic_train_size=20,
                       synthetic_eval_size=10)
  assert statistics.stats_path(config) in out
  with np.load(statistics.stats_path(config)) as f:
    assert f['mean_image'].shape == (24, 24, 3) and int(f['num_images']) == 20
