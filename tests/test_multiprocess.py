"""Several processes train as one does: 2 x 4 CPU devices as 1 x 8, 2 x 1 as 1 x 2.

Cross-cutting: launch/local_multiprocess.sh, runtime/distributed.py, the per-process input
of training/sharding.py and data/pipeline.py, and training/train.py's checkpoints and
results written by process 0, restored in one process (training/saved_nets.py).

The runs share one generated dataset and the tiny config of conftest.py with mesh
(data=4, tower=2), dropout on: each process reads the rows of the data indices its
devices hold (with one device per process, the two processes of a replica's towers read
the same rows), so every row holds the same image for any number of processes, and the
dropout masks, drawn for the global batch, are the same too. With the same images in the
same rows, the same augmentation (drawn per image) and the same parameters, the losses
differ only by the order of float32 sums (the batch mean, the gradient all-reduce over 'data', over
devices inside a process or over gloo between processes). Each such sum has a relative
rounding error below log2(terms) * 2^-24 < 1e-6, and six SGD steps carry earlier
differences into later losses (a contraction or mild growth at this learning rate). So
the losses must agree to rtol 1e-5: a hundredfold margin over the differences observed
(about 1e-7, one or two float32 ulps of a loss near 2.4), and a thousand times below what
a wrong batch (one image missing or repeated changes a loss near 2.4 by ~1e-2) or a
wrong update would change.
"""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from alexnet_jax.configs import demo
from alexnet_jax.data import prepare
from alexnet_jax.training import saved_nets, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(REPO, 'launch', 'local_multiprocess.sh')
RTOL = 1e-5  # See the module docstring.
TIMEOUT_S = 240  # The two-process run; it takes ~30 s alone on 2 cores.

pytestmark = pytest.mark.multiprocess  # Each test launches processes of the project.

FIELDS = {  # Over configs/demo.py, as conftest.py's tiny_config, for both kinds of run.
    'data.synthetic_train_size': 96, 'data.synthetic_eval_size': 37,
    'model.init': 'caffe', 'optimizer.learning_rate': 0.05,
    'optimizer.schedule': 'plateau', 'optimizer.plateau_patience': 1,
    'train.batch_size': 16, 'eval.batch_size': 16, 'eval.ten_patch': False,
    'mesh.data': 4, 'mesh.tower': 2, 'train.log_every_steps': 1,
    'train.eval_every_steps': 4, 'checkpoint.every_steps': 2, 'checkpoint.async_save': False,
}


def _fields(data_dir, **changes):
  return {**FIELDS, 'data.data_dir': data_dir, **changes}


def _config(data_dir, **changes):
  config = demo.get_config()
  config.host_devices = 0  # conftest.py forces 8 CPU devices in this process.
  for name, value in _fields(data_dir, **changes).items():
    section, field = name.split('.')
    setattr(getattr(config, section), field, value)
  return config


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  """The dataset and its statistics, generated once, before any process reads them."""
  directory = str(tmp_path_factory.mktemp('data'))
  config = _config(directory)
  prepare.ready(config)
  return directory


def _launch(num_processes: int, args: list[str], python: str = sys.executable):
  """Runs launch/local_multiprocess.sh: (exit status, output). Kills all it started."""
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}  # conftest's 8 devices.
  env['PYTHON'] = python
  # A new session: the script and all its processes form one group, killed as a whole.
  proc = subprocess.Popen([LAUNCH, str(num_processes), *args], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True)
  try:
    out, _ = proc.communicate(timeout=TIMEOUT_S)
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate()
    pytest.fail(f'{num_processes} processes ran over {TIMEOUT_S} s:\n{out[-5000:]}')
  finally:
    try:
      os.killpg(proc.pid, signal.SIGKILL)  # Leftovers, had the script died first.
    except ProcessLookupError:
      pass
  return proc.returncode, out


def _losses(workdir) -> list[float]:
  with open(os.path.join(workdir, 'results.json')) as f:
    history = json.load(f)['train_history']
  assert [h['step'] for h in history] == list(range(1, len(history) + 1))
  return [h['loss'] for h in history]


def _restore(workdir, config, step):
  return saved_nets.restore(config, workdir, step)


@pytest.mark.slow
def test_two_processes_train_as_one_and_resume_on_one(data_dir, tmp_path, capsys):
  one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
  reference = train.train_and_evaluate(_config(data_dir, **{'train.num_steps': 6}), one)
  losses = _losses(one)
  assert len(losses) == 6 and len(set(losses)) == 6

  flags = [f'--config.{name}={value}' for name, value in
           _fields(data_dir, **{'train.num_steps': 4, 'host_devices': 4}).items()]
  status, out = _launch(2, ['--config=configs/demo.py', f'--workdir={two}', *flags])
  assert status == 0, out[-5000:]
  # Only process 0 prints, and writes results, config and TensorBoard events.
  assert '[process 0] Training paper net (2 towers) on mesh data=4 x tower=2' in out
  assert '[process 0] step 4/4' in out and '[process 1] step ' not in out
  logs = ''
  for path in glob.glob(os.path.join(two, 'logs', '*.log')):  # One per process.
    with open(path) as f:
      logs += f.read()
  assert 'Process 1 of 2: 4 local devices, 8 in all.' in logs
  assert len(glob.glob(os.path.join(two, 'tensorboard', 'events*'))) == 1
  np.testing.assert_allclose(_losses(two), losses[:4], rtol=RTOL)
  with open(os.path.join(two, 'results.json')) as f:
    evaluated = json.load(f)['final']
  assert evaluated['count'] == 37  # Each validation image once, over both processes.
  at_step_4 = reference['history'][0]
  assert at_step_4['step'] == 4
  for key in ('centre_top1_error', 'centre_top5_error'):
    assert evaluated[key] == pytest.approx(at_step_4[key], abs=1e-6)
  # The 2-process checkpoint restores in this one process: the same state as the 1-process
  # run had at step 4, up to the float32 reduction order.
  config = _config(data_dir)
  params_two = jax.device_get(_restore(two, config, 4).params)
  params_one = jax.device_get(_restore(one, config, 4).params)
  for a, b in zip(jax.tree.leaves(params_two), jax.tree.leaves(params_one)):
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-6)

  # Resume the 2-process run on one process with another mesh (both towers on each of the
  # 8 devices): the data stream goes on where it was, so steps 5-6 match the reference.
  capsys.readouterr()
  train.train_and_evaluate(_config(data_dir, **{'train.num_steps': 6, 'mesh.data': 8,
                                                'mesh.tower': 1}), two)
  assert 'Resumed from step 4' in capsys.readouterr().out
  np.testing.assert_allclose(_losses(two), losses, rtol=RTOL)


@pytest.mark.slow
@pytest.mark.parametrize('data,tower', [(1, 2), (2, 1)])
def test_one_device_per_process_trains_as_one_process_with_both(data_dir, tmp_path, data,
                                                                  tower):
  """launch/slurm_gpu.sbatch's default: one process per GPU. With mesh data=1 x tower=2
  the two processes hold one replica's two towers and must feed them the same images;
  with data=2 x tower=1 each feeds its half of the batch. An evaluation (which changes the
  learning-rate factor) and checkpoints on both sides of it run inside the 6 steps."""
  runs = {}
  for processes, devices in ((1, 2), (2, 1)):
    workdir = str(tmp_path / f'{processes}x{devices}')
    flags = [f'--config.{name}={value}' for name, value in _fields(data_dir, **{
        'train.num_steps': 6, 'host_devices': devices, 'mesh.data': data,
        'mesh.tower': tower}).items()]
    status, out = _launch(processes, ['--config=configs/demo.py', f'--workdir={workdir}',
                                      *flags])
    assert status == 0, out[-5000:]
    assert f'on mesh data={data} x tower={tower}, global batch 16' in out
    with open(os.path.join(workdir, 'results.json')) as f:
      runs[processes] = json.load(f)
    assert sorted(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints'))
                  if s.isdigit()) == [2, 4, 6]
  one, two = runs[1], runs[2]
  np.testing.assert_allclose([h['loss'] for h in two['train_history']],
                             [h['loss'] for h in one['train_history']], rtol=RTOL)
  assert [h['step'] for h in two['history']] == [4, 6]
  for at_one, at_two in zip(one['history'], two['history']):
    assert at_two['count'] == at_one['count'] == 37
    assert at_two['centre_top1_error'] == pytest.approx(at_one['centre_top1_error'],
                                                        abs=1e-6)


def test_launcher_stops_every_process_when_one_fails(tmp_path):
  fake_python = tmp_path / 'python'  # Process 1 fails once 0 and 2 are running.
  fake_python.write_text(f"""#!/bin/bash
if [[ $1 == -c ]]; then exec {sys.executable} "$@"; fi  # The launcher's free-port lookup.
if [[ $JAX_PROCESS_ID != 1 ]]; then echo $$ > {tmp_path}/pid_$JAX_PROCESS_ID; exec sleep 120; fi
while [[ ! -e {tmp_path}/pid_0 || ! -e {tmp_path}/pid_2 ]]; do sleep 0.1; done
echo 'process 1 fails'; exit 3
""")
  fake_python.chmod(0o755)
  status, out = _launch(3, ['--workdir=unused'], python=str(fake_python))
  assert status == 3
  assert '[process 1] process 1 fails' in out
  assert 'Process 1 exited with status 3: stopping the others.' in out
  for survivor in (0, 2):
    pid = int((tmp_path / f'pid_{survivor}').read_text())
    deadline = time.time() + 10  # SIGKILL takes effect asynchronously.
    while _alive(pid) and time.time() < deadline:
      time.sleep(0.1)
    assert not _alive(pid), f'process {survivor} (pid {pid}) is still running'


def _alive(pid: int) -> bool:
  """Whether pid runs; a zombie (killed, not yet reaped by its new parent) does not."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
  except FileNotFoundError:
    return False
