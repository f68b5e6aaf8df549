"""Mistakes are caught before long work, each named with its field, value and the fix."""

import os

import pytest
from PIL import Image

from alexnet_jax.configs import default, demo
from alexnet_jax.data import prepare
from alexnet_jax.nn import model
from alexnet_jax.training import preflight, train


def test_every_config_problem_is_listed_at_once():
  config = default.get_config()
  config.optimizer.schedule = 'stepz'
  config.train.log_every_steps = 0
  config.checkpoint.every_steps = 0
  config.optimizer.step_epochs = '30,x'
  with pytest.raises(preflight.ConfigError) as e:
    preflight.check_config(config)
  message = str(e.value)
  assert "optimizer.schedule='stepz': use one of ['plateau', 'steps', 'cosine']" in message
  assert 'train.log_every_steps=0: must be at least 1' in message
  assert 'checkpoint.every_steps=0: must be at least 1' in message
  assert "step_epochs='30,x'" in message
  preflight.check_config(default.get_config())  # The defaults are fine.


def test_learning_rate_multipliers_must_name_layers_of_the_net():
  config = default.get_config()
  config.optimizer.lr_multipliers = 'conv1=0,fc9=2'
  with pytest.raises(preflight.ConfigError, match='names fc9, not a layer of this net '
                     r'\(conv1, conv2, conv3, conv4, conv5, fc6, fc7, fc8\)'):
    preflight.check_config(config)
  config.optimizer.lr_multipliers = 'conv1'
  with pytest.raises(preflight.ConfigError, match='is not layer=factor'):
    preflight.check_config(config)


def test_he_initialisation_needs_inputs_of_unit_scale():
  config = demo.get_config()
  preflight.check_config(config)  # The demo pairs them.
  config.data.mean = 'dataset'
  with pytest.raises(preflight.ConfigError,
                     match=r"model.init='he' expects inputs of unit scale, but "
                     r"data.mean='dataset'.*set data.mean='torchvision'"):
    preflight.check_config(config)


@pytest.mark.parametrize('layout,towers,smallest', [('paper', 2, 64), ('torchvision', 1, 63)])
def test_crops_the_net_shrinks_to_nothing_are_refused(layout, towers, smallest):
  config = default.get_config()
  config.model.layout, config.model.towers = layout, towers
  assert model.smallest_crop(config.model) == smallest
  assert model.fc6_input_side(config.model, 224) == 6  # Figure 2: 6x6x256 into fc6.
  assert model.pooled_sides(config.model, 224) == [27, 13, 6]  # Figure 2's pooled maps.
  config.data.crop_size = smallest - 1
  with pytest.raises(preflight.ConfigError,
                     match=rf'data.crop_size={smallest - 1}: .* Use data.crop_size >= '
                           rf'{smallest}'):
    preflight.check_config(config)
  config.data.crop_size, config.data.image_size = smallest, smallest - 1
  with pytest.raises(preflight.ConfigError, match='larger than data.image_size'):
    preflight.check_config(config)


def test_figure1_net_refuses_crops_it_shrinks_to_nothing():
  config = default.get_config()
  config.model.update(layout='cifar10', towers=1, lrn=False)
  # Three 3/2 poolings in cuda-convnet's geometry: 12 -> 6 -> 3 -> 1, 11 -> 5 -> 2 -> 0.
  assert model.smallest_crop(config.model) == 12
  assert model.fc6_input_side(config.model, 32) == 4
  config.data.crop_size = 11
  with pytest.raises(preflight.ConfigError, match='cifar10 layout.*Use data.crop_size >= 12'):
    preflight.check_config(config)


def _folder(root, splits):
  for split, classes in splits.items():
    for name in classes:
      os.makedirs(root / split / name)
      for i in range(2):
        Image.new('RGB', (40, 30), (i * 90, 60, 200)).save(root / split / name / f'{i}.jpg')


def _folder_config(tmp_path, root, **data):
  config = demo.get_config()
  config.host_devices = 0
  config.data.source, config.data.folder = 'folder', str(root)
  config.data.data_dir = str(tmp_path / 'prepared')
  config.data.image_size, config.data.crop_size = 64, 64
  for name, value in data.items():
    setattr(config.data, name, value)
  return config


def test_missing_split_and_wrong_class_count_are_named(tmp_path):
  root = tmp_path / 'images'
  _folder(root, {'train': ['cats', 'dogs'], 'val': ['cats', 'dogs']})
  config = _folder_config(tmp_path, root)
  prepare.prepare(config)
  with pytest.raises(preflight.ConfigError) as e:
    preflight.check_data(config)
  message = str(e.value)
  assert ("data.eval_split='validation' is not a split of the data" in message
          and "has ['train', 'val']" in message and '--config.data.eval_split=' in message)
  assert ('model.num_classes=10, but the data has 2 classes (cats, dogs): set '
          '--config.model.num_classes=2') in message
  config.data.eval_split, config.model.num_classes = 'val', 2
  preflight.check_data(config)

  # The training loop says so before it writes anything or builds the state.
  config.data.eval_split = 'validation'
  with pytest.raises(preflight.ConfigError, match='eval_split'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


def test_small_images_get_a_note_with_sizes_that_fit(tmp_path):
  root = tmp_path / 'images'
  _folder(root, {'train': ['cats', 'dogs'], 'val': ['cats', 'dogs']})  # 40x30 images.
  config = _folder_config(tmp_path, root, eval_split='val', image_size=256, crop_size=224)
  config.model.num_classes = 2
  prepare.prepare(config)
  [note] = preflight.data_notes(config)
  assert 'shorter side 30 px' in note and 'upscales them 8.5x' in note
  assert '--config.data.image_size=74 --config.data.crop_size=64' in note
  config.data.image_size, config.data.crop_size = 40, 32  # Another prepared copy.
  config.model.layout, config.model.towers = 'torchvision', 1
  prepare.prepare(config)
  assert preflight.data_notes(config) == []  # 40 over 30: not worth a note.
