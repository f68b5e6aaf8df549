"""The TFDS catalog names the docs use go through prepare and training (data.source='tfds').

No network and no TensorFlow: each builder is TFDS's own (its features, class names and
version, its download_and_prepare writing ArrayRecord), with only its download and
decoding replaced by a few generated PNG images and labels of its features, in the splits
the catalog publishes. (The catalog's own builders decode with TensorFlow; without it the
source says how to get it.) cats_vs_dogs is published as one split, so
its runs train and evaluate on slices of it.
"""

import collections
import importlib.util
import io
import os
import tempfile

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from alexnet_jax.data import datasets, pipeline, prepare, sources
from alexnet_jax.training import preflight, train

# Name -> (the splits the catalog publishes, the split overrides the docs give).
CATALOG = {
    'imagenette/320px-v2': (('train', 'validation'), {'eval_split': 'validation'}),
    'cats_vs_dogs': (('train',), {'train_split': 'train[:75%]', 'eval_split': 'train[75%:]'}),
    'cifar10': (('train', 'test'), {'eval_split': 'test'}),
}
PER_SPLIT = 64


def _examples(features: tfds.features.FeaturesDict, split: str):
  """PER_SPLIT examples of `features`: PNG images of the feature's shape (36x44 where it
  is free), labels cycling through the classes, text naming the example."""
  rng = np.random.default_rng(len(split))
  for i in range(PER_SPLIT):
    example = {}
    for key, feature in features.items():
      if isinstance(feature, tfds.features.Image):
        height, width = (s or free for s, free in zip(feature.shape[:2], (36, 44)))
        png = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (height, width, 3), np.uint8)).save(png, 'PNG')
        example[key] = png.getvalue()
      elif isinstance(feature, tfds.features.ClassLabel):
        example[key] = i % feature.num_classes
      else:
        example[key] = f'{split}/{i}.jpg'
    yield f'{split}_{i}', example


@pytest.fixture
def catalog_config(tmp_path, monkeypatch, tiny_config):
  """`catalog_config(name)`: the tiny config reading catalog dataset `name`, whose builder
  makes PER_SPLIT generated examples per published split instead of downloading."""

  def make(name: str):
    splits, overrides = CATALOG[name]
    with datasets.temporary_files_removed():  # TFDS's temporary folders, as the source's.
      builder = tfds.builder(name, data_dir=str(tmp_path / 'probe'))
    builder_class = type(builder)
    monkeypatch.setattr(builder_class, '_split_generators', lambda self, dl_manager: {
        split: _examples(self.info.features, split) for split in splits})
    config = tiny_config(str(tmp_path / 'data'))
    config.data.source = 'tfds'
    config.data.name = name
    config.data.update(overrides)
    config.model.num_classes = builder.info.features['label'].num_classes
    return config

  return make


@pytest.mark.parametrize('name', sorted(CATALOG))
def test_each_catalog_name_prepares_with_its_splits_and_labels(name, catalog_config,
                                                               tmp_path, monkeypatch):
  config = catalog_config(name)
  monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path / 'tmp'))
  os.makedirs(tmp_path / 'tmp')
  prepare.prepare(config)
  assert os.listdir(tmp_path / 'tmp') == []  # TFDS's temporary folders are gone.
  preflight.check_data(config)  # The docs' split overrides name splits of the data.
  train, evaluation = config.data.train_split, config.data.eval_split
  sizes = [pipeline.num_examples(config, split) for split in (train, evaluation)]
  # TFDS stores a split shuffled: its labels are compared as counts.
  labels = {split: collections.Counter(int(r['label']) for r in
                                       sources.open_split(config, split))
            for split in (train, evaluation)}
  published = collections.Counter(i % config.model.num_classes for i in range(PER_SPLIT))
  if name == 'cats_vs_dogs':
    assert sizes == [48, 16] and labels[train] + labels[evaluation] == published
  else:
    assert sizes == [PER_SPLIT] * 2 and labels[train] == labels[evaluation] == published


def test_a_split_the_data_lacks_is_named_with_the_slice_syntax(catalog_config):
  config = catalog_config('cats_vs_dogs')
  prepare.prepare(config)
  config.data.eval_split = 'validation'
  with pytest.raises(datasets.SplitError, match=r"'validation' is not in .*\['train'\].*"
                                                r"'train\[:80%\]'"):
    pipeline.num_examples(config, config.data.eval_split)


@pytest.mark.slow
def test_a_short_run_trains_and_evaluates_on_slices_of_cats_vs_dogs(catalog_config,
                                                                    tmp_path):
  config = catalog_config('cats_vs_dogs')
  config.train.num_steps = 2
  prepare.prepare(config)  # As the docs say: prepare, then train.
  results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert results['step'] == 2
  assert results['final']['count'] == 16  # Every image of 'train[75%:]'.
  assert 0 <= results['final']['centre_top1_error'] <= 1


@pytest.mark.skipif(importlib.util.find_spec('tensorflow') is not None,
                    reason='TensorFlow is installed here')
def test_without_tensorflow_preparing_says_what_to_install(monkeypatch, catalog_config):
  config = catalog_config('cifar10')
  # As the catalog's cifar10 builder does: numpy images, which TFDS encodes with TensorFlow.
  with datasets.temporary_files_removed():
    cifar10 = type(tfds.builder('cifar10'))
  monkeypatch.setattr(cifar10, '_split_generators',
                      lambda self, dl_manager: {'train': iter([('0', {
                          'id': '0', 'label': 0, 'image': np.zeros((32, 32, 3), np.uint8)})])})
  with pytest.raises(datasets.DataMissingError,
                     match=r"'cifar10' needs TensorFlow.*pip install tensorflow-cpu==2\.21\.0"):
    prepare.prepare(config)
  assert not sources.is_prepared(config)
