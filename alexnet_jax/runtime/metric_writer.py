"""Metrics to TensorBoard event files (via tensorboardX, no TensorFlow) and the console.

Scalars, and images (PNG-encoded with Pillow, e.g. the conv1 kernels of Figure 3).

Only one process writes (process 0 by default), so a multi-host run produces one event
file and one set of console lines. Events are written synchronously (tensorboardX's
`EventsWriter`, not its `SummaryWriter`, whose background queue `flush()` does not drain),
so after `flush()` the file holds everything written.

    writer = MetricWriter(workdir / 'tensorboard')
    writer.write_scalars(step, {'train/loss': loss, 'train/learning_rate': lr})
    writer.write_image(step, 'conv1/kernels', picture)  # uint8 (height, width, 3)
    writer.close()
"""

import io
import os
import time
import uuid
from typing import Mapping

import jax
import numpy as np
from absl import logging
from PIL import Image
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto import event_pb2, summary_pb2

from alexnet_jax.runtime import errors


class MetricWriter:
  """Writes scalars and images to `logdir` (TensorBoard); logs scalars as console lines."""

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

  def write_image(self, step: int, tag: str, image):
    """Records an RGB picture, uint8 `(height, width, 3)`, at `step` (not on the console)."""
    if not self.enabled:
      return
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
      raise ValueError(f'write_image({tag!r}): expected uint8 (height, width, 3), got '
                       f'{image.dtype} {image.shape}.')
    png = io.BytesIO()
    Image.fromarray(image).save(png, format='PNG')
    picture = summary_pb2.Summary.Image(height=image.shape[0], width=image.shape[1],
                                        colorspace=3, encoded_image_string=png.getvalue())
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, image=picture)])
    self._writer.write_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                             summary=summary))

  def flush(self):
    """Makes everything written so far readable from the event file."""
    if self._writer is not None:
      self._writer.flush()

  def close(self):
    """Flushes and closes the event file."""
    if self._writer is not None:
      self._writer.close()
      self._writer = None
