"""Shared-memory batches left in flight when Grain workers stop: cleaned up, silently.

A worker sends each batch through a shared-memory block that the main process unlinks
once it has read it (data/workers.py). The few blocks still in flight when the workers
stop are unlinked by Python's resource tracker at exit, which warns of each as "leaked".
Here that is the expected clean-up, so the warning is turned off for every resource
tracker this process (or its workers) starts from now on: they inherit the environment.
"""

import os

_FILTER = 'ignore:resource_tracker:UserWarning'


def silence_warnings() -> None:
  """Adds the filter to PYTHONWARNINGS (once); call it before any tracker starts."""
  filters = [f for f in os.environ.get('PYTHONWARNINGS', '').split(',') if f]
  if _FILTER not in filters:
    os.environ['PYTHONWARNINGS'] = ','.join([*filters, _FILTER])
