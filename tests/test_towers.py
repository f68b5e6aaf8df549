"""Tower placement: locality of the towers, and identical results on every mesh.

Cross-cutting: the towers of nn/model.py on the meshes of training/sharding.py (also its
mesh and batch errors, each process's rows of a batch, the patient CPU collectives), and
the sharded state of training/train_step.py.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax.configs import default
from alexnet_jax.nn import model
from alexnet_jax.training import sharding, train_step

SIZE = 67  # Small inputs keep these tests fast; the layer structure is the paper's.


def make(**mesh_fields):
  config = default.get_config()
  config.model.num_classes = 10
  config.model.init = 'caffe'
  config.data.crop_size = SIZE
  for name, value in mesh_fields.items():
    setattr(config.mesh, name, value)
  net = model.create_model(config)
  images = jax.random.normal(jax.random.key(1), (8, SIZE, SIZE, 3)) * 60
  labels = jnp.arange(8) % 10
  params = net.init(jax.random.key(0), images, train=False)['params']
  return config, net, params, images, labels


def test_tower_two_conv1_never_reaches_tower_one_before_conv3():
  _, net, params, images, _ = make()
  perturbed = jax.tree.map(lambda x: x, params)
  kernel = params['conv1']['kernel']
  perturbed['conv1']['kernel'] = kernel.at[..., 48:].add(0.05)  # Tower 2's 48 kernels.

  def layer_outputs(p):
    _, inter = net.apply({'params': p}, images, train=False, capture_intermediates=True)
    return {k: np.asarray(v['__call__'][0]) for k, v in inter['intermediates'].items()
            if k.startswith(('conv', 'fc'))}

  before, after = layer_outputs(params), layer_outputs(perturbed)
  np.testing.assert_array_equal(before['conv1'][..., :48], after['conv1'][..., :48])
  np.testing.assert_array_equal(before['conv2'][..., :128], after['conv2'][..., :128])
  assert not np.allclose(before['conv2'][..., 128:], after['conv2'][..., 128:])
  # conv3 sees both towers: the change reaches tower 1's half there, and from then on.
  assert not np.allclose(before['conv3'][..., :192], after['conv3'][..., :192])
  assert not np.allclose(before['fc8'], after['fc8'])


def loss_and_grads(net, params, images, labels):
  def loss(p):
    logits = net.apply({'params': p}, images, train=True, rngs={'dropout': jax.random.key(3)})
    return train_step.cross_entropy(logits, labels), logits
  return jax.value_and_grad(loss, has_aux=True)(params)


@pytest.mark.parametrize('tower', [2, pytest.param(1, marks=pytest.mark.slow)])
def test_mesh_results_equal_one_device(tower):
  """Outputs and gradients on mesh (data, tower) equal those on one device.

  Tolerance: the sharded program sums the same float32 terms in another order (gradient
  all-reduce over 'data', per-device partial sums); each sum has at most batch x 55 x 55
  terms, so the relative differences stay at a few float32 epsilons (1.2e-7) times the
  log of that count: rtol 1e-5 with an absolute floor of 1e-5 of each leaf's largest value.
  """
  config, net, params, images, labels = make(tower=tower)
  (loss1, logits1), grads1 = jax.jit(lambda p: loss_and_grads(net, p, images, labels))(params)
  mesh = sharding.make_mesh(config)
  assert dict(mesh.shape) == {'data': 8 // tower, 'tower': tower}
  p_sharded = jax.device_put(params, sharding.state_shardings(mesh, params))
  batch = jax.device_put((images, labels), sharding.batch_sharding(mesh))
  with jax.set_mesh(mesh):
    (loss2, logits2), grads2 = jax.jit(lambda p, b: loss_and_grads(net, p, *b))(p_sharded, batch)
  np.testing.assert_allclose(loss2, loss1, rtol=1e-5)
  np.testing.assert_allclose(logits2, logits1, rtol=1e-5, atol=1e-5 * np.abs(logits1).max())
  for path, g1 in jax.tree_util.tree_leaves_with_path(grads1):
    g2 = jax.tree_util.tree_leaves_with_path(grads2)
    g2 = dict((jax.tree_util.keystr(k), v) for k, v in g2)[jax.tree_util.keystr(path)]
    np.testing.assert_allclose(g2, g1, rtol=1e-5, atol=1e-5 * float(jnp.abs(g1).max()),
                               err_msg=jax.tree_util.keystr(path))


def test_state_is_created_sharded_over_towers():
  config, net, _, _, _ = make()
  mesh = sharding.make_mesh(config)
  state = train_step.create_train_state(config, net, mesh)
  kernel = state.params['conv2']['kernel']
  assert kernel.shape == (5, 5, 48, 256)
  # Each device holds one tower's 128 kernels of conv2, and the velocity lives beside it.
  assert {s.data.shape for s in kernel.addressable_shards} == {(5, 5, 48, 128)}
  shard_devices = {s.device: s.index for s in kernel.addressable_shards}
  tower_of = {d: i for row in mesh.devices for i, d in enumerate(row)}
  for device, index in shard_devices.items():
    assert index[3] == slice(128 * tower_of[device], 128 * (tower_of[device] + 1))
  velocity = state.opt_state.velocity['conv2']['kernel']
  assert velocity.sharding == kernel.sharding


@pytest.mark.parametrize('fields,message', [
    ({'tower': 3}, 'mesh.tower=3 does not fit model.towers=2'),
    ({'data': 3}, 'mesh.data=3 x mesh.tower=2 = 6 devices, but 8 are available'),
])
def test_mesh_errors_name_the_numbers(fields, message):
  config = default.get_config()
  for name, value in fields.items():
    setattr(config.mesh, name, value)
  with pytest.raises(ValueError, match=message):
    sharding.make_mesh(config)


def test_batch_and_class_errors():
  config = default.get_config()
  mesh = sharding.make_mesh(config)
  with pytest.raises(ValueError, match=r'train.batch_size=6 does not divide over mesh.data=4'
                                       r'.*multiple of 4'):
    sharding.check_batch(6, mesh)
  config.model.num_classes = 37
  with pytest.raises(ValueError, match='num_classes=37 does not split over mesh.tower=2'):
    sharding.make_mesh(config)


class _Device:
  def __init__(self, process_index):
    self.process_index = process_index


class _Mesh:
  """What sharding.data_shard reads of a mesh: its shape and its devices' processes."""

  def __init__(self, processes_of_devices, data, tower):
    self.devices = np.array([_Device(p) for p in processes_of_devices],
                            dtype=object).reshape(data, tower)
    self.shape = {'data': data, 'tower': tower}


@pytest.mark.parametrize('processes_of_devices,data,tower,shards', [
    ([0, 0], 1, 2, [(0, 1)]),  # One process, both towers.
    ([0, 1], 1, 2, [(0, 1), (0, 1)]),  # One device per process: both read the whole batch.
    ([0, 1], 2, 1, [(0, 2), (1, 2)]),  # Pure data parallelism, one device each.
    ([0, 1, 2, 3], 2, 2, [(0, 2), (0, 2), (1, 2), (1, 2)]),  # Per GPU, 2 replicas.
    ([0] * 4 + [1] * 4, 4, 2, [(0, 2), (1, 2)]),  # One process per 4-device host.
])
def test_each_process_reads_the_rows_of_its_devices(processes_of_devices, data, tower,
                                                     shards):
  mesh = _Mesh(processes_of_devices, data, tower)
  assert [sharding.data_shard(mesh, p) for p in range(len(shards))] == shards


def test_uneven_processes_are_refused():
  with pytest.raises(ValueError, match=r'Process 0 holds the devices of data indices '
                     r'\[0, 1\].*same number of whole, aligned data indices'):
    sharding.data_shard(_Mesh([0, 0, 0, 1], 2, 2), 1)


def test_forced_cpu_devices_wait_patiently_in_collectives():
  flags = sharding.patient_xla_flags('--xla_force_host_platform_device_count=2')
  assert flags.split() == ['--xla_force_host_platform_device_count=2',
                           *sharding.PATIENT_CPU_COLLECTIVES]
  assert sharding.patient_xla_flags(flags) == flags  # Never twice.
  own = '--xla_cpu_collective_call_terminate_timeout_seconds=5'
  assert sharding.patient_xla_flags(own).split() == [
      own, sharding.PATIENT_CPU_COLLECTIVES[0]]  # The user's own setting stays.
  assert '--xla_cpu_collective_call_terminate_timeout_seconds=600' in os.environ['XLA_FLAGS']
