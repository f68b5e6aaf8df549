"""Preemption and Ctrl-C: save a checkpoint at once and stop cleanly.

SLURM, Kubernetes and Cloud TPU give notice of an eviction with SIGTERM some seconds
before they kill the job; a person at a terminal presses Ctrl-C (SIGINT). Both mean the
same here: save the current step, stop, and let a rerun of the same command resume with
nothing lost. A single process catches the signal itself. With several processes, JAX's
preemption service (started by jax.distributed.initialize) catches SIGTERM on the process
that got it and agrees with the others on a step at which all of them save; every process
must ask at every step (`reached`); a Ctrl-C is handed to that service as a SIGTERM. The
run exits with 128 + the signal's number, as a shell reports a job ended by it. A second
signal of the same kind, `SAME_NOTICE_SECONDS` or more after the first, ends the process at
once; one sooner is the same notice delivered twice and changes nothing.
"""

import signal
import threading
import time

import jax
from jax.experimental import multihost_utils

EXIT_CODE = 128 + signal.SIGTERM  # What a shell reports for a job ended by SIGTERM.
_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Signals of one kind this close together are one notice, not a person who insists: a
# scheduler may signal every process of a job while a launcher passes the signal on to its
# child as well (SLURM's scancel, `kill -- -PGID`, experiments/ablation_runner), so one
# process gets the same SIGTERM twice within milliseconds.
SAME_NOTICE_SECONDS = 2.0


class PreemptionWatch:
  """Tells the training loop when to save and stop; a context manager."""

  def __init__(self, on_signal=lambda: None):
    """on_signal: called (in the main thread) whenever a signal has been taken."""
    self._on_signal_taken = on_signal
    self._signalled = threading.Event()
    self._previous = {}
    self._first_taken = {}  # When each signal was first taken (time.monotonic()).
    self.signal = None  # The signal that stopped the run, once one has.

  @property
  def exit_code(self) -> int:
    """What the process should exit with after the save (128 + the signal)."""
    return 128 + self.signal if self.signal else EXIT_CODE

  def __enter__(self) -> 'PreemptionWatch':
    if threading.current_thread() is threading.main_thread():
      handled = _SIGNALS if jax.process_count() == 1 else (signal.SIGINT,)
      for signum in handled:
        self._previous[signum] = signal.signal(signum, self._on_signal)
    return self

  def __exit__(self, *exc) -> None:
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}

  def _on_signal(self, signum, frame) -> None:
    del frame
    now = time.monotonic()
    first = self._first_taken.get(signum)
    if first is not None:
      if now - first < SAME_NOTICE_SECONDS:
        return  # The notice this run is already acting on, delivered again.
      # Asked again: the default at once (SIGINT: KeyboardInterrupt; SIGTERM: the end).
      if signum == signal.SIGINT:
        raise KeyboardInterrupt
      signal.signal(signum, signal.SIG_DFL)
      signal.raise_signal(signum)
      return
    self._first_taken[signum] = now
    self._on_signal_taken()
    self.signal = signal.Signals(signum)
    if jax.process_count() > 1:
      signal.raise_signal(signal.SIGTERM)  # JAX's preemption service takes it from here.
      return
    if signum == signal.SIGINT:
      print('\nCtrl-C: saving the current step, then stopping (Ctrl-C again, seconds from '
            'now, to abort at once, losing the steps since the last checkpoint).', flush=True)
    self._signalled.set()

  def reached(self, step: int) -> bool:
    """Whether to save at `step` and stop (call it at every step, on every process)."""
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._signalled.is_set()
