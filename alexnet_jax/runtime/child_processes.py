"""Worker processes (image converters, Grain workers) that never outlive their parent.

A `kill -9` of a command, or a crash, would otherwise leave its worker processes running
(converting for hours, holding hundreds of MB each). Called first thing in each worker,
`die_with_parent` asks Linux to kill the worker when the process that started it dies,
and leaves Ctrl-C to that process, which stops its workers itself. A worker whose parent
died while it was still starting (importing, before this call) exits here: Linux would
not signal it, as its parent is gone already.
"""

import ctypes
import multiprocessing
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1  # prctl option: the signal a process gets when its parent dies.


def die_with_parent() -> None:
  """In a worker process: SIGKILL when the parent dies (Linux); ignore Ctrl-C."""
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  if sys.platform.startswith('linux'):
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
  parent = multiprocessing.parent_process()
  if parent is not None and os.getppid() != parent.pid:  # Orphaned while starting.
    os.kill(os.getpid(), signal.SIGKILL)
