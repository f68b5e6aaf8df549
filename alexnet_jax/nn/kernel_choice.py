"""Which implementation the net's two CPU-tuned operations use, decided once per net.

`max_pool` and `strided_conv` each have a backward pass written for XLA:CPU, where XLA's
own is slow (their docstrings say why); on GPUs and TPUs XLA's own kernels are native and
used. The choice follows the devices the net runs on, the platform of its mesh's devices,
not the process's default backend: a net compiled ahead for TPU devices on a CPU machine
gets the TPU choice. `create_model` makes it and hands it to the layers.
"""

import dataclasses

from jax.sharding import Mesh

# conv1's space-to-depth kernel gradient pays from this many bytes of output gradient on:
# below it XLA:CPU's own is faster. Measured on a 2-core x86-64 VM, float32, 11x11 stride 4
# (docs/benchmarks.md, "conv1's kernel gradient"); another CPU may put the crossing
# elsewhere, and the choice only changes speed, never the numbers.
CPU_SPACE_TO_DEPTH_FROM_BYTES = 24 * 2**20


@dataclasses.dataclass(frozen=True)
class Kernels:
  """max_pool_by_offsets: max_pool.py's backward pass instead of XLA's select-and-scatter.
  space_to_depth_from_bytes: strided_conv.py's kernel gradient for strided convolutions
  with at least this many bytes of output gradient; None: never."""
  max_pool_by_offsets: bool = False
  space_to_depth_from_bytes: int | None = None


def for_platform(platform: str) -> Kernels:
  """The choice for devices of `platform` ('cpu', 'gpu', 'cuda', 'tpu', ...)."""
  if platform == 'cpu':
    return Kernels(max_pool_by_offsets=True,
                   space_to_depth_from_bytes=CPU_SPACE_TO_DEPTH_FROM_BYTES)
  return Kernels()


def for_mesh(mesh: Mesh) -> Kernels:
  """The choice for the devices `mesh` holds (all of one platform)."""
  platforms = {d.platform for d in mesh.devices.flat}
  if len(platforms) != 1:
    raise ValueError(f'A mesh of devices of several platforms {sorted(platforms)}: one net '
                     'runs on one kind of device.')
  return for_platform(platforms.pop())
