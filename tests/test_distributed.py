"""Which multi-process job a process joins, from flags and schedulers' environments."""

import pytest

from alexnet_jax.runtime import distributed

SLURM_STEP = {'SLURM_JOB_ID': '4242', 'SLURM_STEP_NODELIST': 'gpu[001-002]',
              'SLURM_NTASKS': '16', 'SLURM_PROCID': '9', 'SLURM_LOCALID': '1'}


def test_single_process_runs_do_not_initialize():
  assert distributed.detect({}) is None
  assert distributed.detect({'JAX_NUM_PROCESSES': '1'}) is None
  assert distributed.detect({**SLURM_STEP, 'SLURM_NTASKS': '1', 'SLURM_PROCID': '0'}) is None
  assert distributed.detect(SLURM_STEP, distributed=False) is None
  # A call that would join a job fails; this one must return before it.
  assert distributed.initialize(env={}) is None


def test_flags_override_environment():
  env = {'JAX_COORDINATOR_ADDRESS': 'env:1', 'JAX_NUM_PROCESSES': '4', 'JAX_PROCESS_ID': '3'}
  assert distributed.detect(env) == distributed.Job('flags and JAX_* variables', 'env:1', 4, 3)
  job = distributed.detect(env, coordinator_address='flag:2', num_processes=2, process_id=0)
  assert (job.coordinator_address, job.num_processes, job.process_id) == ('flag:2', 2, 0)
  # JAX_* variables win over SLURM's: the explicit job description comes first.
  assert distributed.detect({**SLURM_STEP, **env}).num_processes == 4


def test_kubernetes_indexed_job_gives_the_process_id():
  env = {'JAX_COORDINATOR_ADDRESS': 'train-0.train:1234', 'JAX_NUM_PROCESSES': '8',
         'JOB_COMPLETION_INDEX': '5'}
  assert distributed.detect(env).process_id == 5
  assert distributed.detect({**env, 'JAX_PROCESS_ID': '6'}).process_id == 6


def test_slurm_step_leaves_the_coordinator_to_jax():
  job = distributed.detect(SLURM_STEP)
  assert job == distributed.Job('SLURM', None, 16, 9)
  assert 'coordinator detected by JAX' in job.describe()


def test_distributed_flag_leaves_everything_to_jax_detection():
  job = distributed.detect({}, distributed=True)
  assert (job.coordinator_address, job.num_processes, job.process_id) == (None, None, None)


@pytest.mark.parametrize('env,kwargs,message', [
    ({'JAX_NUM_PROCESSES': '2', 'JAX_PROCESS_ID': '0'}, {},
     r'needs --coordinator_address \(or JAX_COORDINATOR_ADDRESS\)'),
    ({'JAX_NUM_PROCESSES': '2'}, {'coordinator_address': 'h:1'},
     r'needs --process_id \(or JAX_PROCESS_ID\), 0..1'),
    ({}, {'num_processes': 2, 'process_id': 2, 'coordinator_address': 'h:1'},
     r'Process id 2 is outside 0..1'),
    ({'JAX_NUM_PROCESSES': 'two'}, {}, r"JAX_NUM_PROCESSES\)='two' is not an integer"),
    ({}, {'num_processes': 0}, r'is 0: it must be >= 1'),
    ({}, {'process_id': 1}, r'need --num_processes'),
])
def test_incomplete_facts_name_what_to_set(env, kwargs, message):
  with pytest.raises(ValueError, match=message):
    distributed.detect(env, **kwargs)


def test_failed_initialize_says_what_to_check(monkeypatch):
  def refuse(**kwargs):
    raise RuntimeError('DEADLINE_EXCEEDED: Barrier timed out')

  monkeypatch.setattr(distributed.jax.distributed, 'initialize', refuse)
  with pytest.raises(RuntimeError, match=r'(?s)failed for coordinator detected by JAX, 16 '
                     r'processes, process id 9 \(from SLURM\): RuntimeError: DEADLINE.*'
                     r'started by `srun`'):
    distributed.initialize(env=SLURM_STEP)
