"""The training clock: throughput, data wait and ETA over a logging window.

Time spent evaluating or saving is left out (`paused`), so images/s, the data-wait
fraction and the ETA describe training alone; the window starts after the first step,
whose time is mostly compilation.
"""

import contextlib
import time


def format_duration(seconds: float) -> str:
  seconds = int(seconds)
  return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s'


class Chrono:
  """Measures one window of training steps at a time."""

  def __init__(self, step: int):
    self.reset(step)

  def reset(self, step: int) -> None:
    """Starts a new window at `step`."""
    self._start, self._step = time.time(), step
    self._paused = self._data_wait = 0.0

  @contextlib.contextmanager
  def paused(self):
    """Time inside this block is not training time."""
    start = time.time()
    try:
      yield
    finally:
      self._paused += time.time() - start

  def waited_for_data(self, seconds: float) -> None:
    self._data_wait += seconds

  def window(self, step: int, batch_size: int) -> dict[str, float]:
    """images_per_second and data_wait_fraction since the window began (at step)."""
    seconds = max(time.time() - self._start - self._paused, 1e-9)
    return {'images_per_second': (step - self._step) * batch_size / seconds,
            'data_wait_fraction': self._data_wait / seconds}

  def eta(self, step: int, total_steps: int, batch_size: int) -> str:
    """The time the remaining steps take at this window's rate."""
    rate = self.window(step, batch_size)['images_per_second']
    return format_duration((total_steps - step) * batch_size / max(rate, 1e-9))
