"""The device mesh ('data', 'tower') and where parameters, optimizer state and batches live.

`tower` = 2 puts each of the paper's two towers on its own device (a "GPU 1" and a "GPU 2"
per data-parallel group); `tower` = 1 runs both towers on every device. `data` splits the
batch. Every parameter is split along its last axis (its kernels or neurons) over `tower`
and replicated over `data`; optimizer state follows the parameters.
"""

import functools
import os

import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from alexnet_jax.runtime import errors

AXES = ('data', 'tower')
# Forced CPU devices share the host's cores with whatever else runs there, so one device
# may reach a collective (the towers' all-gathers) long after the other. XLA:CPU aborts
# the process once a collective has waited its default timeout, which a loaded 2-core
# machine can exceed; these flags let it wait 10 minutes, warning after 2.
PATIENT_CPU_COLLECTIVES = ('--xla_cpu_collective_call_warn_stuck_timeout_seconds=120',
                           '--xla_cpu_collective_call_terminate_timeout_seconds=600')


def patient_xla_flags(xla_flags: str) -> str:
  """`xla_flags` plus PATIENT_CPU_COLLECTIVES where it does not set them itself."""
  extra = [f for f in PATIENT_CPU_COLLECTIVES if f.split('=')[0] not in xla_flags]
  return ' '.join([xla_flags.strip()] + extra).strip()


def use_host_devices(count: int) -> None:
  """Runs JAX on `count` CPU devices forced on the host; call before JAX starts a backend."""
  os.environ['XLA_FLAGS'] = patient_xla_flags(os.environ.get('XLA_FLAGS', ''))
  jax.config.update('jax_platforms', 'cpu')
  jax.config.update('jax_num_cpu_devices', count)


def mesh_shape(config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, int]:
  """(data, tower) sizes from config.mesh, checked against the model and the device count."""
  tower, data = config.mesh.tower, config.mesh.data
  if tower not in (1, config.model.towers):
    raise errors.ConfigError(
        f'mesh.tower={tower} does not fit model.towers={config.model.towers}: use '
        f'mesh.tower=1 (both towers on every device) or mesh.tower={config.model.towers} '
        '(each tower on its own device).')
  if num_devices % tower:
    raise errors.ConfigError(
        f'mesh.tower={tower} does not divide the {num_devices} devices: use mesh.tower=1 '
        '(both towers on every device) or an even device count (on a CPU: '
        '--config.host_devices=2, one forced CPU device per tower).')
  if data == -1:
    data = num_devices // tower
  if data * tower != num_devices:
    raise errors.ConfigError(
        f'mesh.data={config.mesh.data} x mesh.tower={tower} = {data * tower} devices, but '
        f'{num_devices} are available: set mesh.data={num_devices // tower} or mesh.data=-1.')
  if config.model.num_classes % tower:
    raise errors.ConfigError(
        f'model.num_classes={config.model.num_classes} does not split over mesh.tower={tower}: '
        "fc8's neurons are divided between the towers. Use mesh.tower=1 or an even class count.")
  return data, tower


def make_mesh(config: ml_collections.ConfigDict, devices=None) -> Mesh:
  """The ('data', 'tower') mesh over `devices` (default: all devices of all processes).

  A data-parallel group's two tower devices are neighbours in the device order, so that on
  a multi-GPU host the towers of one replica exchange maps over the fastest link.
  """
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(config, len(devices))
  return Mesh(np.asarray(devices).reshape(shape), AXES, axis_types=(AxisType.Auto,) * 2)


def one_program_at_a_time(mesh: Mesh) -> bool:
  """Whether the training loop must let each step finish before it launches anything else
  on the mesh.

  On several CPU devices of one process, XLA:CPU launches a program on each device from a
  shared thread pool. A run on two forced CPU devices hung under load with device 0 in
  the step's all-gather, device 1's launch of that step waiting for XLA:CPU's launch
  semaphore, and the main thread launching a small program (a metric sum) on both devices
  (docs/benchmarks.md). Waiting for each step leaves no second program to compete; on
  the demo it costs nothing measurable. GPUs and TPUs queue each device's programs in
  order, so they keep launching ahead.
  """
  return mesh.devices.size > 1 and mesh.devices.flat[0].platform == 'cpu'


def check_batch(batch_size: int, mesh: Mesh, what: str = 'train.batch_size') -> None:
  """Fails with the numbers to change if a global batch does not divide over the mesh."""
  data = mesh.shape['data']
  if batch_size % data:
    raise errors.ConfigError(f'{what}={batch_size} does not divide over mesh.data={data}: '
                             f'use a multiple of {data}.')


@functools.cache  # Asked at every step (global_batch); the answer never changes.
def data_shard(mesh: Mesh, process: int | None = None) -> tuple[int, int]:
  """(index, count): the share of every global batch that `process` (default: this one) reads.

  The batch is split over 'data' (rows of data index i on the devices of column i); a
  process reads the rows of the data indices its devices hold. So one process per host
  reads its hosts' rows, and with one device per process the two processes holding a
  replica's two towers read the same rows (§3.2: both towers see every image). The
  shares are `count` equal, contiguous blocks of rows; share `index` is rows
  index*B/count .. (index+1)*B/count - 1.
  """
  process = jax.process_index() if process is None else process
  data = mesh.shape['data']
  held = {}  # process -> the data indices its devices hold
  for (index, _), device in np.ndenumerate(mesh.devices):
    held.setdefault(device.process_index, set()).add(index)
  width = len(held[process])
  for p, indices in held.items():
    first = min(indices)
    if len(indices) != width or indices != set(range(first, first + width)) or first % width:
      raise errors.ConfigError(
          f'Process {p} holds the devices of data indices {sorted(indices)} of the mesh '
          f'(data={data} x tower={mesh.shape["tower"]}); every process must hold the same '
          'number of whole, aligned data indices. Give every process the same number of '
          'devices, a divisor or a multiple of mesh.tower.')
  return min(held[process]) // width, data // width


def param_spec(leaf: jax.ShapeDtypeStruct | jax.Array) -> P:
  """Every kernel and bias is split along its last axis (kernels/neurons) over 'tower'."""
  return P(*(None,) * (leaf.ndim - 1), 'tower') if leaf.ndim else P()


def state_shardings(mesh: Mesh, abstract_state):
  """NamedShardings for a pytree of parameters or of anything shaped like them.

  Leaves of parameter shape (parameters, momentum) are split over 'tower'; scalars (step,
  learning-rate factor) are replicated.
  """
  return jax.tree.map(lambda leaf: NamedSharding(mesh, param_spec(leaf)), abstract_state)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batches: split over 'data', replicated over 'tower' (both towers see every image)."""
  return NamedSharding(mesh, P('data'))


def global_batch(mesh: Mesh, local_batch):
  """Assembles each process's share (`data_shard`) into global arrays split over 'data'."""
  sharding = batch_sharding(mesh)
  count = data_shard(mesh)[1]

  def assemble(x):
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(sharding, x,
                                                  (x.shape[0] * count, *x.shape[1:]))

  return jax.tree.map(assemble, local_batch)
