"""runtime/watchdog.py: a stalled step, and Ctrl-C while the main thread is stuck in native
code. No test asserts how long anything took: the step times the watchdog judges come
from a clock the test sets, and the signal grace is told apart by what the watchdog says
and by a grace no test could wait out."""

import os
import re
import signal
import subprocess
import sys
import time
import types

import pytest

from alexnet_jax.runtime import preemption, watchdog

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Steps of 10 ms, then a step stuck in native code, as in a collective that never
# completes: the main thread holds no Python frame the interpreter could interrupt.
_STALLING_LOOP = '''
import ctypes, sys, time
from alexnet_jax.runtime import preemption, watchdog
min_seconds, signal_grace = float(sys.argv[1]), float(sys.argv[3])
libc = ctypes.CDLL(None)
mutex = ctypes.create_string_buffer(64)  # A glibc mutex, zero-initialised.

def stuck_in_a_collective():
  libc.pthread_mutex_lock(mutex)
  libc.pthread_mutex_lock(mutex)  # Never returns, whatever signal arrives.

log = open(sys.argv[2], 'w')
dog = watchdog.Watchdog(factor=5, min_seconds=min_seconds, signal_grace=signal_grace,
                        stacks_to=lambda: log)
with dog, preemption.PreemptionWatch(on_signal=dog.took_signal) as watch:
  dog.beat()
  for step in range(20):
    time.sleep(0.01)
    dog.beat()
  print('stalling', flush=True)
  stuck_in_a_collective()
'''


def _stalling(tmp_path, min_seconds, signal_grace=2):
  return subprocess.Popen([sys.executable, '-c', _STALLING_LOOP, str(min_seconds),
                           str(tmp_path / 'run.log'), str(signal_grace)], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.multiprocess
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


@pytest.mark.multiprocess
@pytest.mark.parametrize('presses, apart', [(1, 0), (2, 0.05), (2, None)],
                         ids=['one', 'one-delivered-twice', 'two'])
def test_ctrl_c_ends_a_run_stuck_in_native_code(tmp_path, presses, apart):
  # One press: the watchdog waits out the grace of 2 s, then ends the run. So does one
  # notice delivered twice within milliseconds (a signal to the process group and one
  # passed on by a launcher). A second press after SAME_NOTICE_SECONDS ends it at once: the
  # grace is then 600 s, which the run could not have waited out (the communicate() below
  # gives up after 60 s).
  if apart is None:
    apart = preemption.SAME_NOTICE_SECONDS + 0.5
  proc = _stalling(tmp_path, min_seconds=600, signal_grace=600 if apart > 1 else 2)
  assert proc.stdout.readline() == 'stalling\n'  # Only the signal can end it now.
  time.sleep(0.5)
  try:
    for press in range(presses):
      if press:
        time.sleep(apart)
      proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
  finally:
    proc.kill()
  assert proc.returncode == 128 + signal.SIGINT
  assert 'SIGINT arrived' in err and 'the training loop has not taken it' in err
  if apart < 1:
    waited = re.search(r'SIGINT arrived (\d+) s ago', err)
    assert waited and int(waited.group(1)) >= 2, err  # The whole grace.
  assert 'stuck_in_a_collective' in (tmp_path / 'run.log').read_text()


def test_the_limit_follows_the_median_step_and_pauses_are_not_timed(monkeypatch):
  # The watchdog reads a clock the test sets; only its thread's polls take real time.
  clock = [0.0]
  monkeypatch.setattr(watchdog, 'time', types.SimpleNamespace(monotonic=lambda: clock[0]))
  exits = []
  dog = watchdog.Watchdog(factor=10, min_seconds=0.05, warmup=3, exit_process=exits.append)
  with dog:
    dog.beat()
    assert dog.limit() is None  # Compiling: not timed.
    for _ in range(5):
      clock[0] += 0.02
      dog.beat()
    assert dog.limit() == pytest.approx(0.2)  # Ten times the median step of 20 ms.
    with dog.paused():  # An evaluation far longer than the limit.
      clock[0] += 1.5
      time.sleep(1.5)  # The watchdog's thread looks (once a second) while it is paused.
    assert exits == []
    clock[0] += 1.5  # A step as long: a hang.
    for _ in range(300):  # Until the thread's next look (at most 30 s: a loaded machine).
      if exits:
        break
      time.sleep(0.1)
  assert exits == [watchdog.HANG_EXIT_CODE]
