"""runtime/preemption.py in a run of `python -m alexnet_jax.main`: SIGTERM (a scheduler's
notice) or Ctrl-C saves a checkpoint at once; a rerun resumes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from alexnet_jax.run import checkpointing
from alexnet_jax.runtime import preemption

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Each test runs `python -m alexnet_jax.main` for a few steps, signals it, and reruns it.
pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


def command(workdir, data_dir, num_steps, **more):
  overrides = {
      'host_devices': 2, 'data.data_dir': data_dir, 'data.synthetic_train_size': 96,
      'data.synthetic_eval_size': 20, 'train.batch_size': 16, 'eval.batch_size': 20,
      'train.num_steps': num_steps, 'train.log_every_steps': 1,
      'train.eval_every_steps': 1000, 'checkpoint.every_steps': 1000, **more,
  }
  return [sys.executable, '-u', '-m', 'alexnet_jax.main', '--config=configs/demo.py',
          f'--workdir={workdir}', *(f'--config.{k}={v}' for k, v in overrides.items())]


def signalled_at_step_3(args, send) -> tuple[subprocess.Popen, str, str]:
  """Runs the command in a new session, `send(proc)` once it logged step 3; (proc, out, err)."""
  proc = subprocess.Popen(args, cwd=REPO, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, start_new_session=True)
  lines, deadline = [], time.time() + 300
  try:
    for line in proc.stdout:
      lines.append(line)
      if line.startswith('step 3/') or time.time() > deadline:
        break
    send(proc)
    out, err = proc.communicate(timeout=120)
  finally:
    proc.kill()
  return proc, ''.join(lines) + out, err


def test_sigterm_saves_the_current_step_and_the_rerun_resumes(tmp_path):
  workdir, data_dir = str(tmp_path / 'run'), str(tmp_path / 'data')
  proc, out, _ = signalled_at_step_3(command(workdir, data_dir, 1000),
                                     lambda p: p.send_signal(signal.SIGTERM))
  assert proc.returncode == preemption.EXIT_CODE, out[-3000:]
  saved_line = [l for l in out.splitlines() if l.startswith('Preempted: saved step ')]
  assert saved_line, out[-3000:]
  step = int(saved_line[0].split()[3])
  assert step >= 3  # No evaluation or regular checkpoint came before: only this save.
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints'), read_only=True)
  assert ckpt.all_steps() == [step]
  ckpt.close()
  with open(os.path.join(workdir, 'results.json')) as f:
    assert json.load(f)['preempted'] is True

  rerun = subprocess.run(command(workdir, data_dir, step + 2), cwd=REPO, text=True,
                         capture_output=True, timeout=300)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert f'Resumed from step {step}' in rerun.stdout
  assert f'step {step + 2}/{step + 2}' in rerun.stdout


def test_one_notice_delivered_twice_still_saves(tmp_path):
  # A scheduler that signals the whole job while a launcher passes the signal on too
  # (ablation_runner does): the run gets SIGTERM twice, milliseconds apart. That is one
  # notice, not a second one that would abort without saving. 50 ms: the loop has taken
  # the first by then, and whether the watchdog or the loop sees the second first, each
  # must count it as the same notice.
  def twice(proc):
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)

  workdir, data_dir = str(tmp_path / 'run'), str(tmp_path / 'data')
  proc, out, err = signalled_at_step_3(command(workdir, data_dir, 1000), twice)
  assert proc.returncode == preemption.EXIT_CODE, out[-3000:] + err[-3000:]
  saved_line = [l for l in out.splitlines() if l.startswith('Preempted: saved step ')]
  assert saved_line, out[-3000:] + err[-3000:]
  assert 'the run is stuck' not in err, err[-3000:]
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints'), read_only=True)
  assert ckpt.all_steps() == [int(saved_line[0].split()[3])]
  ckpt.close()


def test_ctrl_c_saves_quietly_even_with_grain_workers(tmp_path):
  workdir, data_dir = str(tmp_path / 'run'), str(tmp_path / 'data')
  # The whole session is signalled: a terminal's Ctrl-C reaches the Grain workers too.
  proc, out, err = signalled_at_step_3(
      command(workdir, data_dir, 1000, **{'data.worker_count': 2}),
      lambda p: os.killpg(p.pid, signal.SIGINT))
  assert proc.returncode == 128 + signal.SIGINT, out[-3000:] + err[-3000:]
  assert out.count('Ctrl-C: saving the current step, then stopping') == 1
  saved_line = [l for l in out.splitlines() if l.startswith('Interrupted: saved step ')]
  assert saved_line, out[-3000:]
  assert 'Traceback' not in err and 'KeyboardInterrupt' not in err, err[-3000:]
  assert 'leaked shared_memory' not in err, err[-3000:]  # Expected leftovers, cleaned.
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints'), read_only=True)
  assert ckpt.all_steps() == [int(saved_line[0].split()[3])]
  ckpt.close()
