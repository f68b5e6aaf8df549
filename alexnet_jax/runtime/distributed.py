"""Joining a multi-process job: `jax.distributed.initialize` from flags or the scheduler.

One job: at start-up, before any JAX computation, decide whether this process is one of
several and, if it is, connect it to the others. A single-process run never initializes.
Where the facts come from (the first that applies wins):

  1. main.py's flags --coordinator_address, --num_processes, --process_id, each falling
     back to JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID (set these in a
     Kubernetes JobSet or Indexed Job; launch/local_multiprocess.sh sets them too). The
     process id falls back further to JOB_COMPLETION_INDEX, which Kubernetes sets in each
     pod of an Indexed Job.
  2. SLURM (a job step started with `srun`): SLURM_NTASKS > 1. The count and id are
     SLURM_NTASKS and SLURM_PROCID; JAX takes the coordinator from JAX_COORDINATOR_ADDRESS
     or else the first node of SLURM_STEP_NODELIST (port from JAX_COORDINATOR_PORT or the
     job id), and on GPUs gives each process the GPU numbered SLURM_LOCALID (or those in
     JAX_LOCAL_DEVICE_IDS: one process per host needs all of them).
  3. --distributed: initialize whatever the environment, leaving every fact not given to
     JAX's own detection: Cloud TPU pod slices (from the TPU VM metadata), SLURM, Open MPI.

--nodistributed never initializes. A failed initialization raises, saying what to check.
"""

import dataclasses
import os
from typing import Mapping

import jax
from absl import logging


@dataclasses.dataclass(frozen=True)
class Job:
  """How this process joins a multi-process job; None leaves a fact to JAX's detection."""
  source: str  # Where the facts came from, named in messages.
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None

  def describe(self) -> str:
    facts = [f'coordinator {self.coordinator_address or "detected by JAX"}',
             f'{self.num_processes or "detected number of"} processes',
             f'process id {self.process_id if self.process_id is not None else "detected"}']
    return f'{", ".join(facts)} (from {self.source})'


def _int(value: str | int | None, name: str) -> int | None:
  if value is None or isinstance(value, int):
    return value
  try:
    return int(value)
  except ValueError:
    raise ValueError(f'{name}={value!r} is not an integer.') from None


def detect(env: Mapping[str, str], *, coordinator_address: str | None = None,
           num_processes: int | None = None, process_id: int | None = None,
           distributed: bool | None = None) -> Job | None:
  """The multi-process job this process belongs to, or None for a single-process run.

  Args:
    env: the environment (os.environ).
    coordinator_address: --coordinator_address (host:port of process 0), or None.
    num_processes: --num_processes, or None.
    process_id: --process_id, or None.
    distributed: --distributed: True always joins a job, False never, None when the
      facts above say there are several processes.

  Raises:
    ValueError: the facts given are incomplete or contradictory (the message names the
      flag or variable to set).
  """
  if distributed is False:
    return None
  num = _int(num_processes if num_processes is not None else env.get('JAX_NUM_PROCESSES'),
             '--num_processes (or JAX_NUM_PROCESSES)')
  if num is not None:
    if num < 1:
      raise ValueError(f'--num_processes (or JAX_NUM_PROCESSES) is {num}: it must be >= 1.')
    if num == 1 and not distributed:
      return None
    address = coordinator_address or env.get('JAX_COORDINATOR_ADDRESS')
    pid = process_id
    if pid is None:
      pid = env.get('JAX_PROCESS_ID', env.get('JOB_COMPLETION_INDEX'))
    pid = _int(pid, '--process_id (or JAX_PROCESS_ID, JOB_COMPLETION_INDEX)')
    missing = []
    if not address:
      missing.append('--coordinator_address (or JAX_COORDINATOR_ADDRESS), host:port of '
                     'process 0')
    if pid is None:
      missing.append(f'--process_id (or JAX_PROCESS_ID), 0..{num - 1}')
    if missing:
      raise ValueError(f'A job of {num} processes also needs {" and ".join(missing)}.')
    if not 0 <= pid < num:
      raise ValueError(f'Process id {pid} is outside 0..{num - 1} for a job of {num} '
                       'processes: give each process a distinct id in that range.')
    return Job('flags and JAX_* variables', address, num, pid)
  if coordinator_address is not None or process_id is not None:
    raise ValueError('--coordinator_address and --process_id need --num_processes (or '
                     'JAX_NUM_PROCESSES) too.')
  tasks = _int(env.get('SLURM_NTASKS'), 'SLURM_NTASKS')
  if tasks is not None and tasks > 1 and 'SLURM_PROCID' in env:
    return Job('SLURM', env.get('JAX_COORDINATOR_ADDRESS'), tasks,
               _int(env['SLURM_PROCID'], 'SLURM_PROCID'))
  if distributed:
    return Job('JAX cluster detection (--distributed)')
  return None


def _what_to_check(job: Job) -> str:
  checks = ['every process was started with the same number of processes and a distinct '
            'id', 'process 0 is running and its coordinator port is free and reachable from '
            'every host (firewall; a 127.0.0.1 address works on one machine only)',
            'no http(s)_proxy variables are set (they can make the connection hang)']
  if job.source == 'SLURM':
    checks.append('the processes were started by `srun` inside the allocation (see '
                  'launch/slurm_gpu.sbatch), not by running python in the batch script')
  return '; '.join(checks)


def initialize(*, coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, distributed: bool | None = None,
               env: Mapping[str, str] | None = None) -> Job | None:
  """Joins the multi-process job `detect` finds (see the module docstring), if any.

  Call it once at start-up, before any JAX computation. Returns the job joined, or None
  for a single-process run (nothing is initialized).

  Raises:
    ValueError: incomplete or contradictory flags or variables.
    RuntimeError: jax.distributed.initialize failed (the message says what to check).
  """
  job = detect(os.environ if env is None else env, coordinator_address=coordinator_address,
               num_processes=num_processes, process_id=process_id, distributed=distributed)
  if job is None:
    return None
  # Cross-process collectives of the CPU backend (forced host devices, tests): without a
  # collectives implementation a multi-process CPU computation cannot all-reduce. gloo
  # runs over TCP and finds its peers through the coordinator; it is jax 0.10.2's default,
  # named here because the run depends on it.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  logging.info('Joining a multi-process job: %s', job.describe())
  try:
    jax.distributed.initialize(coordinator_address=job.coordinator_address,
                               num_processes=job.num_processes, process_id=job.process_id)
  except Exception as e:  # Re-raised with what to check; never swallowed.
    raise RuntimeError(
        f'jax.distributed.initialize failed for {job.describe()}: {type(e).__name__}: {e}. '
        f'Check that {_what_to_check(job)}.') from e
  logging.info('Process %d of %d: %d local devices, %d in all.', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return job
