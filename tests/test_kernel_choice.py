"""kernel_choice: the CPU-tuned backward passes follow the mesh's devices, not the process."""

import jax
import numpy as np
from jax.sharding import Mesh

from alexnet_jax.configs import demo
from alexnet_jax.nn import kernel_choice, model


def test_cpu_devices_get_the_cpu_backward_passes_and_other_platforms_xlas_own():
  cpu = kernel_choice.for_platform('cpu')
  assert cpu.max_pool_by_offsets and cpu.space_to_depth_from_bytes > 0
  for platform in ('gpu', 'cuda', 'rocm', 'tpu'):
    other = kernel_choice.for_platform(platform)
    assert not other.max_pool_by_offsets and other.space_to_depth_from_bytes is None


class _FakeDevice:
  def __init__(self, platform):
    self.platform = platform


def test_the_net_takes_its_kernels_from_the_mesh_it_is_made_for():
  mesh = Mesh(np.array(jax.devices()[:2]).reshape(1, 2), ('data', 'tower'))
  assert model.create_model(demo.get_config(), mesh).kernels == kernel_choice.for_platform('cpu')
  # A mesh of (described) TPU devices, as when compiling ahead on a CPU machine.
  tpu_mesh = type('TpuMesh', (), {'devices': np.array([_FakeDevice('tpu')] * 4)})()
  assert kernel_choice.for_mesh(tpu_mesh) == kernel_choice.for_platform('tpu')
