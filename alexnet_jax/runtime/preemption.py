"""Preemption: when the scheduler sends SIGTERM, save a checkpoint at once and stop.

SLURM, Kubernetes and Cloud TPU give notice of an eviction with SIGTERM some seconds
before they kill the job. A single process catches it here. With several processes, JAX's
preemption service (started by jax.distributed.initialize) catches it on the process that
got it and agrees with the others on a step at which all of them save; every process must
ask at every step (`reached`). Either way the run saves that step and exits with
EXIT_CODE, and rerunning the same command resumes with nothing lost.
"""

import signal
import threading

import jax
from jax.experimental import multihost_utils

EXIT_CODE = 128 + signal.SIGTERM  # What a shell reports for a job ended by SIGTERM.


class PreemptionWatch:
  """Tells the training loop when to save and stop; a context manager."""

  def __init__(self):
    self._signalled = threading.Event()
    self._previous = None

  def __enter__(self) -> 'PreemptionWatch':
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def _on_sigterm(self, signum, frame) -> None:
    del signum, frame
    self._signalled.set()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # A second SIGTERM ends the process.

  def reached(self, step: int) -> bool:
    """Whether to save at `step` and stop (call it at every step, on every process)."""
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._signalled.is_set()
