"""The net of docs/paper.md ("The net"): parameter counts of every variant, layer shapes,
init, dropout."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax.configs import default
from alexnet_jax.nn import kernel_choice, model
from alexnet_jax.tools import summary
from alexnet_jax.training import preflight


def make_config(**model_fields):
  config = default.get_config()
  for name, value in model_fields.items():
    setattr(config.model, name, value)
  return config


def param_count(config, size=224):
  net = model.create_model(config)
  params = jax.eval_shape(
      lambda: net.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False)['params'])
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


@pytest.mark.parametrize('fields,expected', [
    ({}, 60_965_224),  # The paper's net.
    ({'towers': 1}, 59_798_312),  # Footnote 2: one tower, half the kernels.
    ({'layout': 'torchvision', 'towers': 1, 'lrn': False}, 61_100_840),
    # conv6: 256 kernels of 3x3 over its own tower's 128 maps (an assumption: the paper
    # gives no widths for "1 CNN*").
    ({'extra_conv6': True}, 60_965_224 + 128 * 9 * 256 + 256),
    # Without conv3, conv4 sees its own tower's 128 maps of conv2.
    ({'remove_conv': 'conv3'}, 60_965_224 - 885_120 - 663_936 + (9 * 128 * 384 + 384)),
    ({'remove_conv': 'conv4'}, 60_965_224 - 663_936),
    # Without conv5, pool5 follows conv4 and fc6 sees 6x6x384 inputs.
    ({'remove_conv': 'conv5'}, 60_965_224 - 442_624 + 4096 * 6 * 6 * (384 - 256)),
    ({'num_classes': 10}, 60_965_224 - 4096 * 990 - 990),
])
def test_parameter_counts(fields, expected):
  assert param_count(make_config(**fields)) == expected


def test_layer_table_matches_reference():
  rows = {r.name: r for r in summary.layer_rows(make_config())}
  # docs/paper.md, "The net": output shapes, parameters and MACs of every layer.
  assert rows['conv1'].output == '55x55x96 -> 27x27x96'
  assert rows['conv2'].output == '27x27x256 -> 13x13x256'
  assert rows['conv3'].output == '13x13x384'
  assert rows['conv4'].output == '13x13x384'
  assert rows['conv5'].output == '13x13x256 -> 6x6x256'
  assert [rows[n].params for n in ('conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7',
                                   'fc8')] == [34_944, 307_456, 885_120, 663_936, 442_624,
                                               37_752_832, 16_781_312, 4_097_000]
  assert [rows[n].macs for n in ('conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7',
                                 'fc8')] == [105_415_200, 223_948_800, 149_520_384,
                                             112_140_288, 74_760_192, 37_748_736, 16_777_216,
                                             4_096_000]
  assert sum(r.macs for r in rows.values()) == 724_406_816
  # Figure 2's caption: neurons of layers 2-8 (the first number is the paper's own slip).
  assert [rows[n].neurons for n in ('conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7', 'fc8')] \
      == [186_624, 64_896, 64_896, 43_264, 4096, 4096, 1000]
  assert rows['conv2'].sees == 'own tower' and rows['conv3'].sees == 'both towers'
  assert rows['conv4'].sees == 'own tower' and rows['conv5'].sees == 'own tower'


def test_one_tower_macs_and_227_input():
  one = summary.layer_rows(make_config(towers=1))
  assert sum(r.macs for r in one) == 391_514_384  # docs/paper.md: footnote 2's net.
  config = make_config()
  config.data.crop_size = 227  # Caffe's geometry: no padding needed for 55x55.
  rows = {r.name: r for r in summary.layer_rows(config)}
  assert rows['conv1'].output == '55x55x96 -> 27x27x96'
  assert sum(r.params for r in rows.values()) == 60_965_224


def test_summary_table_ends_with_totals():
  table = summary.format_table(make_config())
  assert table.splitlines()[-1].split()[1:] == ['60,965,224', '724,406,816']


@pytest.mark.parametrize('scheme,stds,biases', [
    ('paper', {'conv1': .01, 'conv3': .01, 'fc6': .01, 'fc8': .01},
     {'conv1': 0., 'conv2': 1., 'conv3': 0., 'conv4': 1., 'conv5': 1., 'fc6': 1., 'fc7': 1.,
      'fc8': 0.}),
    ('caffe', {'conv1': .01, 'conv3': .01, 'fc6': .005, 'fc7': .005, 'fc8': .01},
     {'conv1': 0., 'conv2': .1, 'conv3': 0., 'fc6': .1, 'fc8': 0.}),
    ('cuda-convnet', {'conv1': .01, 'conv2': .01, 'conv3': .03, 'conv4': .03, 'conv5': .03,
                      'fc6': .01}, {'conv2': 1., 'conv3': 0.}),
    # He et al.: sqrt(2 / fan-in), sqrt(1 / fan-in) for fc8 (no ReLU after it); biases 0.
    ('he', {'conv1': (2 / (11 * 11 * 3)) ** .5, 'conv2': (2 / (5 * 5 * 48)) ** .5,
            'conv3': (2 / (3 * 3 * 256)) ** .5, 'fc7': (2 / 4096) ** .5, 'fc8': (1 / 4096) ** .5},
     {'conv1': 0., 'conv2': 0., 'fc6': 0., 'fc8': 0.}),
])
def test_initialisation_schemes(scheme, stds, biases):
  config = make_config(init=scheme)
  config.data.crop_size = 67  # Small input: init statistics do not depend on it.
  net = model.create_model(config)
  params = net.init(jax.random.key(0), jnp.zeros((1, 67, 67, 3)), train=False)['params']
  for name, std in stds.items():
    kernel = np.asarray(params[name]['kernel'])
    assert abs(kernel.mean()) < 0.05 * std
    assert kernel.std() == pytest.approx(std, rel=0.05), name
  for name, value in biases.items():
    np.testing.assert_array_equal(np.asarray(params[name]['bias']), np.float32(value))


def small_net(**fields):
  config = make_config(num_classes=10, **fields)
  net = model.create_model(config)
  images = jax.random.normal(jax.random.key(1), (8, 67, 67, 3)) * 50
  params = net.init(jax.random.key(0), images, train=False)['params']
  return net, params, images


def test_dropout_only_in_training_and_different_per_example_and_step():
  net, params, images = small_net(init='caffe')
  same = jnp.broadcast_to(images[:1], images.shape)  # Eight copies of one image.
  evaluate = lambda: np.asarray(net.apply({'params': params}, same, train=False))
  np.testing.assert_array_equal(evaluate(), evaluate())
  np.testing.assert_allclose(evaluate(), evaluate()[:1].repeat(8, 0), rtol=1e-6)
  train = lambda seed: net.apply({'params': params}, same, train=True,
                                 rngs={'dropout': jax.random.key(seed)},
                                 capture_intermediates=True)
  out1, inter = train(1)
  out2, _ = train(2)
  assert not np.allclose(out1[0], out1[1])  # Different masks across the batch.
  assert not np.allclose(out1, out2)  # Different masks across steps.
  # fc6's ReLU output versus the dropout output: half the units kept, scaled by 2.
  fc6 = np.maximum(np.asarray(inter['intermediates']['fc6']['__call__'][0]), 0)
  dropped = np.asarray(inter['intermediates']['Dropout_0']['__call__'][0])
  active = fc6 > 0
  kept = dropped[active] != 0
  assert 0.45 < kept.mean() < 0.55
  np.testing.assert_allclose(dropped[active][kept], 2 * fc6[active][kept], rtol=1e-6)


def test_bfloat16_compute_keeps_float32_params():
  net, params, images = small_net(dtype='bfloat16')
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  logits = net.apply({'params': params}, images, train=False)
  assert logits.dtype == jnp.float32
  ref, _, _ = small_net()
  want = ref.apply({'params': params}, images, train=False)
  np.testing.assert_allclose(logits, want, atol=0.05 * float(jnp.abs(want).max()))


def test_tanh_and_pooling_ablations_change_the_net_but_not_the_shapes():
  base, params, images = small_net()
  out = base.apply({'params': params}, images, train=False)
  for fields in ({'activation': 'tanh'}, {'pool_window': 2}, {'lrn': False},
                 {'lrn_alpha_convention': 'divided'}):
    other, _, _ = small_net(**fields)
    got = other.apply({'params': params}, images, train=False)
    assert got.shape == out.shape
    assert not np.allclose(got, out), fields


@pytest.mark.parametrize('fields,message', [
    ({'layout': 'alexnet'}, 'model.layout'),
    ({'towers': 3}, 'model.towers=3'),
    ({'remove_conv': 'conv1'}, 'model.remove_conv'),
    ({'init': 'xavier'}, 'model.init'),
    ({'activation': 'gelu'}, 'model.activation'),
    ({'layout': 'torchvision'}, 'model.towers=1'),
    ({'layout': 'cifar10'}, 'Set model.towers=1, model.lrn=False.'),
])
def test_bad_model_fields_name_the_field(fields, message):
  # The schema (preflight) checks each field; the layer plan how they combine.
  problems = preflight.config_problems(make_config(num_classes=10, **fields))
  assert any(message in problem for problem in problems), problems


@pytest.mark.multiprocess
def test_summary_command_takes_overrides():
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.tools.summary', '--config=configs/ilsvrc2012.py',
       '--config.model.towers=1'], cwd=repo, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.splitlines()[-1].split()[1:] == ['59,798,312', '391,514,384']


def test_hidden_activations_are_available_for_feature_work():
  net, params, images = small_net()
  logits, state = net.apply({'params': params}, images, train=False, mutable=['activations'])
  acts = {name[:-len('_output')]: value[0] for name, value in state['activations'].items()}
  assert set(acts) == {'conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7'}
  assert acts['fc7'].shape == (8, 4096) and float(acts['fc7'].min()) >= 0.0  # After ReLU.
  assert acts['conv1'].shape[-1] == 96
  np.testing.assert_array_equal(logits, net.apply({'params': params}, images, train=False))


def cifar10_config(**model_fields):
  config = make_config(layout='cifar10', towers=1, lrn=False, num_classes=10, **model_fields)
  config.data.crop_size = 32
  return config


def test_figure1_net_follows_cuda_convnet_cfg():
  # layers-18pct.cfg: 5x5 convolutions with 32, 32, 64 kernels (padding 2), 3/2 pooling
  # (max, avg, avg; out = 1 + ceil((in - 3) / 2)), one fully connected layer.
  expected = [5 * 5 * 3 * 32 + 32, 5 * 5 * 32 * 32 + 32, 5 * 5 * 32 * 64 + 64,
              4 * 4 * 64 * 10 + 10]
  assert param_count(cifar10_config(), size=32) == sum(expected) == 89_578
  rows = summary.layer_rows(cifar10_config())
  assert [r.name for r in rows] == ['conv1', 'conv2', 'conv3', 'fc4']
  assert [r.params for r in rows] == expected
  assert [r.output for r in rows] == ['32x32x32 -> 16x16x32', '16x16x32 -> 8x8x32 avg',
                                      '8x8x64 -> 4x4x64 avg', '10']


def test_convnet_pooling_cuts_the_last_window():
  # cuda-convnet: the last 3x3 window of 4 rows covers rows 2-3 only; max takes the max of
  # what is inside, average divides the sum inside by 9 (AvgPooler(sizeX * sizeX)).
  x = -jnp.ones((1, 4, 4, 1))
  pool = lambda kind: np.asarray(model.pool_maps(
      x, model.ConvLayer('c', 1, 5, 1, 2, False, pool=kind, pool_padding='convnet'), 3, 2,
      kernel_choice.for_platform('cpu')))
  np.testing.assert_array_equal(pool('max')[0, ..., 0], -np.ones((2, 2)))
  np.testing.assert_allclose(pool('avg')[0, ..., 0], -np.array([[9, 6], [6, 4]]) / 9)


@pytest.mark.parametrize('activation', ['relu', 'tanh'])
def test_figure1_net_uses_the_activation(activation):
  net = model.create_model(cifar10_config(activation=activation))
  images = jax.random.normal(jax.random.key(1), (4, 32, 32, 3)) * 50
  params = net.init(jax.random.key(0), images, train=False)['params']
  _, state = net.apply({'params': params}, images, train=False, mutable=['activations'])
  acts = {name: np.asarray(value[0]) for name, value in state['activations'].items()}
  assert set(acts) == {'conv1_output', 'conv2_output', 'conv3_output'}
  pre = np.asarray(jax.lax.conv_general_dilated(
      images, params['conv1']['kernel'], (1, 1), [(2, 2)] * 2,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + params['conv1']['bias'])
  want = np.maximum(pre, 0) if activation == 'relu' else np.tanh(pre)
  np.testing.assert_allclose(acts['conv1_output'], want, rtol=1e-5, atol=1e-6)
