"""The hardware `compile_for` compiles for: GPU hosts and TPU slices, from vendors' figures.

A target names a device model and how many: `h100:8` (eight H100s on one host), `h100:2x8`
(two hosts of eight), `tpu:v5e:2x4` (a TPU v5e slice of 2x4 chips). XLA compiles for a
described device without having one: a GPU from a description of the chip (XLA's
GpuTargetConfigProto, written here from the figures below), a TPU slice from its name
(libtpu knows its chips).

GPU figures: NVIDIA's datasheets (A100 Tensor Core GPU datasheet, H100 and H200 Tensor Core
GPU datasheets: memory, memory bandwidth, boost clock, SM count, L2) and the CUDA C++
Programming Guide's table of compute capabilities (shared memory per SM and per block;
8.0: 164 KB per SM, 163 KB per block; 9.0: 228 KB and 227 KB). NVIDIA's "GB" of HBM are
GiB in practice (an 80 GB H100 holds five 16 GiB stacks), and the driver keeps a little.
TPU figures: Google Cloud's TPU system architecture pages (HBM per chip, TensorCores per
chip, chips per host).
"""

import dataclasses
import math
import re

from jax.experimental import topologies

from alexnet_jax.runtime import errors

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Gpu:
  """One NVIDIA GPU model, as its datasheet describes it."""
  name: str  # The device_kind the CUDA driver reports.
  memory: int  # Bytes of HBM.
  bandwidth: int  # Bytes/s of HBM bandwidth.
  sm_count: int
  boost_clock_ghz: float
  l2_cache: int  # Bytes.
  compute_capability: tuple[int, int]
  shared_memory_per_sm: int  # Bytes.
  shared_memory_per_block_optin: int  # Bytes.
  fp32_units_per_sm: int  # CUDA cores per SM.


GPUS = {
    'a100-40': Gpu('NVIDIA A100-SXM4-40GB', memory=40 * GIB, bandwidth=1_555 * 10**9,
                   sm_count=108, boost_clock_ghz=1.41, l2_cache=40 * 2**20,
                   compute_capability=(8, 0), shared_memory_per_sm=164 * 1024,
                   shared_memory_per_block_optin=163 * 1024, fp32_units_per_sm=64),
    'a100-80': Gpu('NVIDIA A100-SXM4-80GB', memory=80 * GIB, bandwidth=2_039 * 10**9,
                   sm_count=108, boost_clock_ghz=1.41, l2_cache=40 * 2**20,
                   compute_capability=(8, 0), shared_memory_per_sm=164 * 1024,
                   shared_memory_per_block_optin=163 * 1024, fp32_units_per_sm=64),
    'h100': Gpu('NVIDIA H100 80GB HBM3', memory=80 * GIB, bandwidth=3_350 * 10**9,
                sm_count=132, boost_clock_ghz=1.98, l2_cache=50 * 2**20,
                compute_capability=(9, 0), shared_memory_per_sm=228 * 1024,
                shared_memory_per_block_optin=227 * 1024, fp32_units_per_sm=128),
    'h200': Gpu('NVIDIA H200', memory=141 * GIB, bandwidth=4_800 * 10**9,
                sm_count=132, boost_clock_ghz=1.98, l2_cache=50 * 2**20,
                compute_capability=(9, 0), shared_memory_per_sm=228 * 1024,
                shared_memory_per_block_optin=227 * 1024, fp32_units_per_sm=128),
}



def gpu_named(device_kind: str) -> str | None:
  """The GPUS key of the GPU whose driver reports `device_kind`; None if none."""
  return next((key for key, gpu in GPUS.items() if gpu.name == device_kind), None)


# What JAX may allocate on a GPU: it reserves this fraction of the memory at start
# (XLA_PYTHON_CLIENT_MEM_FRACTION, default 0.75) and allocates every array inside it.
GPU_JAX_FRACTION = 0.75


@dataclasses.dataclass(frozen=True)
class TpuGeneration:
  """One TPU generation; a JAX device is a chip (v4 and v5p: both TensorCores as one)."""
  name: str  # As libtpu names it in a topology: 'v4', 'v5e', ...
  memory: int  # Bytes of HBM per chip.
  bandwidth: int  # Bytes/s of HBM bandwidth per chip.
  megacore: bool  # Two TensorCores per chip, one JAX device.
  single_host_chips: int  # The most chips one host holds (a slice up to this is one host).
  dims: int  # 3 for the 3-D tori (v4, v5p: '2x2x2'), 2 for the 2-D ones (v5e, v6e: '2x4').


TPUS = {
    'v4': TpuGeneration('v4', memory=32 * GIB, bandwidth=1_200 * 10**9, megacore=True,
                        single_host_chips=4, dims=3),
    'v5e': TpuGeneration('v5e', memory=16 * GIB, bandwidth=819 * 10**9, megacore=False,
                         single_host_chips=8, dims=2),
    'v5p': TpuGeneration('v5p', memory=95 * GIB, bandwidth=2_765 * 10**9, megacore=True,
                         single_host_chips=4, dims=3),
    'v6e': TpuGeneration('v6e', memory=32 * GIB, bandwidth=1_640 * 10**9, megacore=False,
                         single_host_chips=8, dims=2),
}


@dataclasses.dataclass(frozen=True)
class Target:
  """A parsed --target: a GPU model on `hosts` hosts of `per_host` devices, or a TPU slice."""
  spec: str  # As given.
  gpu: Gpu | None = None
  tpu: TpuGeneration | None = None
  hosts: int = 1
  per_host: int = 0  # GPUs per host.
  chips: tuple[int, ...] = ()  # The TPU slice's chips along each axis.

  @property
  def devices(self) -> int:
    return self.hosts * self.per_host if self.gpu else math.prod(self.chips)

  @property
  def memory(self) -> int:
    """Bytes one device holds."""
    return self.gpu.memory if self.gpu else self.tpu.memory

  @property
  def usable_memory(self) -> int:
    """Bytes a JAX program may use on one device."""
    return int(self.memory * GPU_JAX_FRACTION) if self.gpu else self.memory

  @property
  def platform(self) -> str:
    return 'cuda' if self.gpu else 'tpu'


def _usage() -> str:
  return (f"GPUs: MODEL:N (N on one host) or MODEL:HxN (H hosts of N), MODEL one of "
          f"{', '.join(GPUS)}; TPU slices: tpu:GEN:SHAPE, e.g. tpu:v4:2x2x2, tpu:v5e:2x4 "
          f"(GEN one of {', '.join(TPUS)}; v4 and v5p take three dimensions, v5e and v6e two)")


def parse(spec: str) -> Target:
  """The Target `spec` names; a UserError that lists the accepted forms otherwise."""
  if ',slices=' in spec or '/' in spec:
    raise errors.UserError(
        f'--target={spec}: several TPU slices are not supported. Between slices the '
        'gradient reduction is compiled to send/recv over the data-centre network, which '
        "an audit of collectives does not see, and the asynchronous collectives lose the "
        "source names the audit reads, so the paper's rule could not be checked and false "
        'violations would be reported. Compile one slice (e.g. tpu:v5e:2x4): its memory and '
        'collectives are what each slice of a multi-slice run compiles to.')
  if m := re.fullmatch(r'tpu:(v\w+):(\d+(?:x\d+)+)', spec):
    tpu = TPUS.get(m.group(1))
    chips = tuple(int(c) for c in m.group(2).split('x'))
    if tpu and len(chips) == tpu.dims and all(chips):
      return Target(spec, tpu=tpu, chips=chips)
  if m := re.fullmatch(r'([\w-]+):(?:(\d+)x)?(\d+)', spec):
    gpu, hosts, per_host = GPUS.get(m.group(1)), int(m.group(2) or 1), int(m.group(3))
    if gpu and hosts >= 1 and per_host >= 1:
      return Target(spec, gpu=gpu, hosts=hosts, per_host=per_host)
  raise errors.UserError(f'--target={spec} names no hardware this tool knows. {_usage()}.')


def gpu_target_config(gpu: Gpu) -> str:
  """XLA's GpuTargetConfigProto (text format) for `gpu`: what its GPU compiler asks a
  device (limits fixed by the compute capability, and the chip's size and speed)."""
  major, minor = gpu.compute_capability
  return f'''gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: {gpu.shared_memory_per_sm}
  shared_memory_per_block_optin: {gpu.shared_memory_per_block_optin}
  threads_per_core_limit: 2048
  core_count: {gpu.sm_count}
  fpus_per_core: {gpu.fp32_units_per_sm}
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  thread_dim_limit_x: 1024
  thread_dim_limit_y: 1024
  thread_dim_limit_z: 64
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
  memory_bandwidth: {gpu.bandwidth}
  l2_cache_size: {gpu.l2_cache}
  clock_rate_ghz: {gpu.boost_clock_ghz}
  device_memory_size: {gpu.memory}
  cuda_compute_capability {{ major: {major} minor: {minor} }}
}}
platform_name: "CUDA"
dnn_version_info {{ major: 9 minor: 8 }}
device_description_str: "{gpu.name}"
'''


def topology_devices(target: Target) -> list:
  """Compile-only JAX devices of `target` (needs the compile-gpu or compile-tpu extra)."""
  if target.gpu:
    return topologies.get_topology_desc(
        topology_name='cuda', platform='cuda', topology=f'1x{target.hosts}x{target.per_host}',
        target_config=gpu_target_config(target.gpu)).devices
  shape = 'x'.join(map(str, target.chips))
  single_host = math.prod(target.chips) <= target.tpu.single_host_chips
  host_bounds = tuple(target.chips) + (1,) * (3 - len(target.chips)) if single_host else (
      (2, 2, 1))
  options = {'chip_config_name': 'megacore'} if target.tpu.megacore else {}
  return topologies.get_topology_desc(
      topology_name=f'{target.tpu.name}:{shape}', platform='tpu', num_slices=1,
      chips_per_host_bounds=host_bounds, **options).devices
