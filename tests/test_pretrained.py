"""weights/pretrained.py: torchvision's AlexNet weights in the torchvision layout: conversion,
partial loads, errors. The configs, parameter shapes and random conv weights are
conftest.py's fixtures (`torchvision_config`, `abstract_params`, `conv_arrays`)."""

import jax
import numpy as np
import pytest

import torch_zip
from alexnet_jax.nn import model
from alexnet_jax.training import sharding
from alexnet_jax.weights import pretrained


def _mesh(config):
  return sharding.make_mesh(config, jax.devices()[:1])  # One of the forced CPU devices.


def _crop_with_side(config, side: int) -> int:
  return next(c for c in range(63, 400) if model.fc6_input_side(config.model, c) == side)


def test_the_convolutional_layers_alone_load_and_the_rest_start_fresh(
    tmp_path, torchvision_config, abstract_params, conv_arrays):
  path = str(tmp_path / 'features.pth')
  arrays = conv_arrays()
  torch_zip.write(path, arrays)
  config = torchvision_config(63, path=path)
  loaded = pretrained.load(config, abstract_params(config))
  assert list(loaded.params) == ['conv1', 'conv2', 'conv3', 'conv4', 'conv5']
  assert loaded.fresh == {'fc6': 'not in the file', 'fc7': 'not in the file',
                          'fc8': 'not in the file'}
  # OIHW -> HWIO.
  np.testing.assert_array_equal(loaded.params['conv2']['kernel'],
                                arrays['features.3.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(loaded.params['conv5']['bias'], arrays['features.10.bias'])
  summary = loaded.summary()
  assert 'loaded conv1, conv2, conv3, conv4, conv5 (2,469,696 parameters)' in summary
  assert 'fc6 (not in the file)' in summary and 'fc8 (not in the file)' in summary

  abstract = abstract_params(config)  # Shapes and shardings are all `into` needs.
  params = pretrained.into(abstract, loaded)
  np.testing.assert_array_equal(np.asarray(params['conv1']['kernel']),
                                arrays['features.0.weight'].transpose(2, 3, 1, 0))
  assert params['conv1']['kernel'].sharding == abstract['conv1']['kernel'].sharding
  assert params['fc6'] is abstract['fc6']  # Fresh layers are left as they were.


def test_fc6_rows_follow_this_nets_flattening(tmp_path, torchvision_config, abstract_params):
  config = torchvision_config(0)
  crop = _crop_with_side(config, 2)
  config = torchvision_config(crop, path=str(tmp_path / 'fc6.pth'))
  weight = np.random.default_rng(1).normal(size=(4096, 256 * 2 * 2)).astype(np.float32)
  torch_zip.write(config.model.pretrained,
                  {'classifier.1.weight': weight, 'classifier.1.bias': np.zeros(4096, np.float32)})
  kernel = pretrained.load(config, abstract_params(config)).params['fc6']['kernel']
  # torch's column (channel, row, col) is this net's row (row, col, channel).
  for c, h, w, out in [(0, 0, 1, 5), (17, 1, 0, 4095), (255, 1, 1, 0)]:
    assert kernel[(h * 2 + w) * 256 + c, out] == weight[out, c * 4 + h * 2 + w]


def test_fc8_for_other_classes_starts_fresh_other_mismatches_are_errors(
    tmp_path, torchvision_config, abstract_params, conv_arrays):
  arrays = conv_arrays()
  arrays['classifier.6.weight'] = np.zeros((1000, 4096), np.float32)
  arrays['classifier.6.bias'] = np.zeros(1000, np.float32)
  path = str(tmp_path / 'w.pth')
  torch_zip.write(path, arrays)
  config = torchvision_config(63, classes=2, path=path)
  loaded = pretrained.load(config, abstract_params(config))
  assert loaded.fresh['fc8'] == '1000 classes in the file, model.num_classes=2'

  arrays['features.3.weight'] = np.zeros((192, 32, 5, 5), np.float32)
  torch_zip.write(path, arrays)
  with pytest.raises(pretrained.PretrainedError, match=r'features\.3\.weight has shape '
                     r'\(192, 32, 5, 5\).*conv2 \(5, 5, 32, 192\).*\(5, 5, 64, 192\)'):
    pretrained.load(config, abstract_params(config))


def test_wrong_layouts_and_foreign_names_are_errors(
    tmp_path, torchvision_config, abstract_params, conv_arrays):
  path = str(tmp_path / 'w.pth')
  torch_zip.write(path, conv_arrays())
  paper = torchvision_config(63, path=path)
  paper.model.layout, paper.model.towers = 'paper', 2
  with pytest.raises(pretrained.PretrainedError, match="'paper' layout with 2 tower.*"
                     'configs/torchvision_alexnet.py'):
    pretrained.load(paper, {})
  torch_zip.write(path, {**conv_arrays(), 'features.1.running_mean': np.zeros(3, np.float32)})
  config = torchvision_config(63, path=path)
  with pytest.raises(pretrained.PretrainedError, match='features.1.running_mean'):
    pretrained.load(config, abstract_params(config))


def test_imported_net_gives_pytorchs_logits(tmp_path, torchvision_config, abstract_params):
  torch = pytest.importorskip('torch')
  from alexnet_jax.tools import torch_reference  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  twin = torch_reference.TorchvisionAlexNet(num_classes=10).eval()
  with torch.no_grad():  # Larger weights than the default init: logits far from zero.
    for p in twin.parameters():
      p.mul_(3.0)
  path = str(tmp_path / 'alexnet.pth')
  torch.save(twin.state_dict(), path)
  config = torchvision_config(224, classes=10, path=path)
  config.data.image_size = 256
  loaded = pretrained.load(config, abstract_params(config))
  assert not loaded.fresh
  net = model.create_model(config)
  mesh = _mesh(config)
  params = pretrained.into(abstract_params(config), loaded)
  images = np.random.default_rng(0).normal(size=(2, 224, 224, 3)).astype(np.float32)
  with jax.set_mesh(mesh):
    ours = np.asarray(net.apply({'params': params}, images, train=False))
  with torch.no_grad():
    theirs = twin(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  assert np.abs(theirs).max() > 1e-2
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5 * np.abs(theirs).max())


def test_pretrained_layers_chooses_among_the_files_layers(
    tmp_path, torchvision_config, abstract_params, conv_arrays):
  path = str(tmp_path / 'features.pth')
  torch_zip.write(path, conv_arrays())
  config = torchvision_config(63, path=path)
  config.model.pretrained_layers = 'conv1, conv2'
  loaded = pretrained.load(config, abstract_params(config))
  assert list(loaded.params) == ['conv1', 'conv2']
  assert loaded.fresh['conv3'] == 'not in model.pretrained_layers'
  config.model.pretrained_layers = 'conv1,conv9'
  with pytest.raises(pretrained.PretrainedError,
                     match=r"names \['conv9'\], which the configured net does not have; its "
                           'layers are conv1, conv2, conv3, conv4, conv5, fc6, fc7, fc8'):
    pretrained.load(config, abstract_params(config))
