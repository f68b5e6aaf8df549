"""A watchdog for a training loop that stops making progress, and Ctrl-C that always works.

A step stuck in a collective (a device that never joins an all-gather, a lost host) hangs
the main thread inside the runtime's C++ code: it never returns to Python, so neither the
loop nor a Python signal handler can act. This module watches from a thread of its own:

- The loop calls `beat()` after every step. Once `warmup` steps have run (the first
  compiles), a step that takes longer than `factor` times the median of the recent steps
  (and at least `min_seconds`) is a hang: every thread's stack goes to the log, one
  paragraph to stderr, and the process exits with `HANG_EXIT_CODE`, a code a scheduler can
  requeue on; the last checkpoint is on disk, and the rerun resumes from it.
  Evaluations and saves run inside `paused()`, where no step is timed.
- SIGINT and SIGTERM also wake this thread (through Python's wakeup file descriptor, which
  the C-level handler writes even while the main thread is stuck). If the main thread has
  not taken the signal within `signal_grace` seconds, it never will: the watchdog dumps
  the stacks and exits with 128 + the signal. A second signal of the kind, at least
  `preemption.SAME_NOTICE_SECONDS` after the first, ends it at once (a person insists);
  one sooner is the same notice delivered twice, as preemption.py counts it too.
"""

import contextlib
import faulthandler
import os
import select
import signal
import statistics
import sys
import threading
import time
from typing import Callable, TextIO

from alexnet_jax.runtime import preemption

HANG_EXIT_CODE = 75  # EX_TEMPFAIL: a temporary failure; rerunning the command resumes.
_WATCHED = (signal.SIGINT, signal.SIGTERM)


class Watchdog:
  """A context manager around the training loop; see the module docstring."""

  def __init__(self, factor: float, min_seconds: float, warmup: int = 3,
               signal_grace: float = 20.0, window: int = 100,
               stacks_to: Callable[[], TextIO | None] = lambda: None,
               exit_process: Callable[[int], None] = os._exit):
    self._factor = factor
    self._min_seconds = min_seconds
    self._warmup = warmup
    self._signal_grace = signal_grace
    self._window = window
    self._stacks_to = stacks_to
    self._exit = exit_process
    self._durations = []
    self._steps = 0
    self._last = None  # When the current step started (None while paused).
    self._lock = threading.Lock()
    self._stop = threading.Event()
    self._signals_seen = 0  # Notices the main thread has taken (`took_signal`).
    self._read_fd = self._write_fd = None
    self._previous_wakeup = None
    self._thread = None

  def limit(self) -> float | None:
    """How long the current step may take before it counts as a hang (None: not timed)."""
    with self._lock:
      if self._steps < self._warmup or not self._durations:
        return None
      return max(self._min_seconds, self._factor * statistics.median(self._durations))

  def beat(self) -> None:
    """A step has finished; the next one starts now."""
    now = time.monotonic()
    with self._lock:
      if self._last is not None:
        self._steps += 1
        if self._steps > 1:  # The first step compiles: not a step time.
          self._durations = (self._durations + [now - self._last])[-self._window:]
      self._last = now

  @contextlib.contextmanager
  def paused(self):
    """Untimed work (an evaluation, a save): `with watchdog.paused(): ...`."""
    with self._lock:
      self._last = None
    try:
      yield
    finally:
      with self._lock:
        self._last = time.monotonic()

  def took_signal(self) -> None:
    """The main thread's signal handler calls this for each notice (not for a repeat
    within SAME_NOTICE_SECONDS): it is alive and handling it."""
    self._signals_seen += 1

  def __enter__(self) -> 'Watchdog':
    if threading.current_thread() is threading.main_thread():
      self._read_fd, self._write_fd = os.pipe()
      os.set_blocking(self._write_fd, False)
      self._previous_wakeup = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
    self._thread = threading.Thread(target=self._watch, name='watchdog', daemon=True)
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._stop.set()
    if self._write_fd is not None:
      signal.set_wakeup_fd(self._previous_wakeup)
      os.write(self._write_fd, b'\0')  # Wakes the thread out of select().
    self._thread.join()
    for fd in (self._read_fd, self._write_fd):
      if fd is not None:
        os.close(fd)

  def _watch(self) -> None:
    arrived = []  # When each SIGINT/SIGTERM notice arrived, as (signal number, time).
    while not self._stop.is_set():
      if self._read_fd is not None and select.select([self._read_fd], [], [], 1.0)[0]:
        now = time.monotonic()
        for n in os.read(self._read_fd, 64):
          if n in _WATCHED and not any(
              n == m and now - t < preemption.SAME_NOTICE_SECONDS for m, t in arrived):
            arrived.append((n, now))
      elif self._read_fd is None:
        self._stop.wait(1.0)
      if self._stop.is_set():
        return
      now = time.monotonic()
      untaken = arrived[self._signals_seen:]
      # A second notice the loop has not taken: a person insists; else wait for the grace.
      if untaken and (len(untaken) > 1 or now - untaken[0][1] > self._signal_grace):
        signum = untaken[-1][0]
        self._give_up(128 + signum, f'{signal.Signals(signum).name} arrived '
                      f'{now - untaken[0][1]:.0f} s ago and the training loop has not taken it')
        return
      with self._lock:
        started = self._last
      limit = self.limit()
      if started is not None and limit is not None and now - started > limit:
        self._give_up(HANG_EXIT_CODE, f'a training step has run for {now - started:.0f} s, '
                      f'over {self._factor:g} times the median step and over '
                      f'{self._min_seconds:g} s')
        return

  def _give_up(self, code: int, why: str) -> None:
    where = self._stacks_to()
    target = where if where is not None else sys.stderr
    print(f'\nWatchdog: {why}. Every thread\'s stack:', file=target, flush=True)
    faulthandler.dump_traceback(file=target, all_threads=True)
    target.flush()
    logged = f' (every thread\'s stack is in {where.name})' if where is not None else ''
    print(f'Error: the run is stuck: {why}; a collective or a device that never answers is '
          f'the usual cause{logged}. Exiting with status {code}, so that a scheduler can '
          'requeue it; rerun the same command to resume from the last checkpoint. If it '
          'recurs at the same place, report the stacks.', file=sys.stderr, flush=True)
    self._exit(code)

