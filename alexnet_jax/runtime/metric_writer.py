"""Scalar metrics to TensorBoard event files (via tensorboardX, no TensorFlow) and the console.

Only one process writes (process 0 by default), so a multi-host run produces one event
file and one set of console lines. Events are written synchronously (tensorboardX's
`EventsWriter`, not its `SummaryWriter`, whose background queue `flush()` does not drain),
so after `flush()` the file holds everything written.

    writer = MetricWriter(workdir / 'tensorboard')
    writer.write_scalars(step, {'train/loss': loss, 'train/learning_rate': lr})
    writer.close()
"""

import os
import time
import uuid
from typing import Mapping

import jax
from absl import logging
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto import event_pb2, summary_pb2

from alexnet_jax.runtime import errors


class MetricWriter:
  """Writes scalars to `logdir` (TensorBoard) and logs them as one console line."""

  def __init__(self, logdir, enabled: bool | None = None, console: bool = True):
    """Opens a new event file in `logdir` (created if needed) when enabled.

    Args:
      logdir: the TensorBoard log directory.
      enabled: whether this process writes; None: only process 0 does.
      console: also log each `write_scalars` call as one line.
    """
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.console = console
    self._writer = None
    if self.enabled:
      logdir = os.path.expanduser(os.fspath(logdir))
      try:
        os.makedirs(logdir, exist_ok=True)
        # A unique suffix: a restarted run never overwrites an earlier file.
        self._writer = EventsWriter(os.path.join(logdir, 'events'),
                                    filename_suffix=f'.{uuid.uuid4().hex[:8]}')
      except OSError as e:
        raise errors.NotWritableError(
            f'Cannot write TensorBoard events to {logdir}: {e}. Choose a --workdir that '
            'this user can create and write (or fix its permissions).') from e

  def write_scalars(self, step: int, scalars: Mapping[str, float]):
    """Records `scalars` (name -> number, Python or 0-d array) at `step`."""
    if not self.enabled:
      return
    step = int(step)
    values = {name: float(value) for name, value in scalars.items()}
    summary = summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag=name, simple_value=value)
        for name, value in values.items()])
    self._writer.write_event(event_pb2.Event(wall_time=time.time(), step=step,
                                             summary=summary))
    if self.console:
      logging.info('[%d] %s', step,
                   ', '.join(f'{name}={value:.6g}' for name, value in values.items()))

  def flush(self):
    """Makes everything written so far readable from the event file."""
    if self._writer is not None:
      self._writer.flush()

  def close(self):
    """Flushes and closes the event file."""
    if self._writer is not None:
      self._writer.close()
      self._writer = None
