"""The watchdog: a stalled step, and Ctrl-C while the main thread is stuck in native code."""

import os
import signal
import subprocess
import sys
import time

import pytest

from alexnet_jax.runtime import watchdog

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Steps of 10 ms, then a step stuck in native code, as in a collective that never
# completes: the main thread holds no Python frame the interpreter could interrupt.
_STALLING_LOOP = '''
import ctypes, sys, time
from alexnet_jax.runtime import preemption, watchdog
min_seconds = float(sys.argv[1])
libc = ctypes.CDLL(None)
mutex = ctypes.create_string_buffer(64)  # A glibc mutex, zero-initialised.

def stuck_in_a_collective():
  libc.pthread_mutex_lock(mutex)
  libc.pthread_mutex_lock(mutex)  # Never returns, whatever signal arrives.

log = open(sys.argv[2], 'w')
dog = watchdog.Watchdog(factor=5, min_seconds=min_seconds, signal_grace=2,
                        stacks_to=lambda: log)
with dog, preemption.PreemptionWatch(on_signal=dog.took_signal) as watch:
  dog.beat()
  for step in range(20):
    time.sleep(0.01)
    dog.beat()
  print('stalling', flush=True)
  stuck_in_a_collective()
'''


def _stalling(tmp_path, min_seconds):
  return subprocess.Popen([sys.executable, '-c', _STALLING_LOOP, str(min_seconds),
                           str(tmp_path / 'run.log')], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def test_a_stalled_step_dumps_every_stack_and_exits_for_a_requeue(tmp_path):
  proc = _stalling(tmp_path, min_seconds=1)
  out, err = proc.communicate(timeout=60)
  assert out == 'stalling\n'
  assert proc.returncode == watchdog.HANG_EXIT_CODE == 75
  assert err.startswith('Error: the run is stuck: a training step has run for ')
  assert f"every thread's stack is in {tmp_path / 'run.log'}" in err
  assert 'rerun the same command to resume from the last checkpoint' in err
  assert len(err.strip().splitlines()) == 1
  stacks = (tmp_path / 'run.log').read_text()
  assert 'Watchdog: a training step has run for' in stacks
  assert 'stuck_in_a_collective' in stacks and 'Thread 0x' in stacks


@pytest.mark.parametrize('presses', [1, 2])
def test_ctrl_c_ends_a_run_stuck_in_native_code(tmp_path, presses):
  proc = _stalling(tmp_path, min_seconds=600)  # Only the signal can end it.
  assert proc.stdout.readline() == 'stalling\n'
  time.sleep(0.5)
  started = time.time()
  for _ in range(presses):
    proc.send_signal(signal.SIGINT)
    time.sleep(0.1)
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == 128 + signal.SIGINT
  assert 'SIGINT arrived' in err and 'the training loop has not taken it' in err
  # One press: after the grace of 2 s; a second press: at once (within the 1-s poll).
  assert time.time() - started < (10 if presses == 1 else 1.9)
  assert 'stuck_in_a_collective' in (tmp_path / 'run.log').read_text()


def test_the_limit_follows_the_median_step_and_pauses_are_not_timed():
  exits = []
  dog = watchdog.Watchdog(factor=10, min_seconds=0.05, warmup=3, exit_process=exits.append)
  with dog:
    dog.beat()
    assert dog.limit() is None  # Compiling: not timed.
    for _ in range(5):
      time.sleep(0.02)
      dog.beat()
    assert 0.15 < dog.limit() < 1.0  # Ten times a step of ~20 ms (the compile left out).
    with dog.paused():  # An evaluation far longer than the limit.
      time.sleep(1.5)
    assert exits == []
    time.sleep(1.5)  # A step as long: a hang.
  assert exits == [watchdog.HANG_EXIT_CODE]
