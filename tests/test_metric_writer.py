"""runtime/metric_writer.py: the TensorBoard event file holds what was written (scalars,
images), read back by conftest.py's `read_events`; a disabled writer writes nothing."""

import io
import logging
import re

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from alexnet_jax.runtime.metric_writer import MetricWriter


def _read_scalars(read_events, logdir):
  """(tag, step, value) of every scalar."""
  return [(v.tag, event.step, v.simple_value) for event in read_events(logdir)
          for v in event.summary.value if v.HasField('simple_value')]


def test_scalars_are_readable_back_from_the_event_file(tmp_path, caplog, read_events):
  writer = MetricWriter(tmp_path / 'tb', enabled=True)
  with caplog.at_level(logging.INFO):
    writer.write_scalars(1, {'train/loss': 6.9, 'train/learning_rate': jnp.float32(0.01)})
    writer.write_scalars(2, {'train/loss': np.float32(6.5)})
  writer.flush()
  assert _read_scalars(read_events, tmp_path / 'tb') == [
      ('train/loss', 1, pytest.approx(6.9)), ('train/learning_rate', 1, pytest.approx(0.01)),
      ('train/loss', 2, pytest.approx(6.5))]
  assert '[1] train/loss=6.9, train/learning_rate=0.01' in caplog.text
  writer.write_scalars(3, {'eval/top1_error': 0.75})
  writer.close()
  assert _read_scalars(read_events, tmp_path / 'tb')[-1] == ('eval/top1_error', 3, 0.75)


def test_an_image_is_readable_back_as_a_png(tmp_path, read_events):
  picture = np.zeros((5, 7, 3), np.uint8)
  picture[1, 2] = (255, 0, 10)
  writer = MetricWriter(tmp_path / 'tb', enabled=True)
  writer.write_image(4, 'conv1/kernels', picture)
  writer.close()
  [value] = [v for event in read_events(tmp_path / 'tb') for v in event.summary.value]
  assert value.tag == 'conv1/kernels'
  assert (value.image.height, value.image.width, value.image.colorspace) == (5, 7, 3)
  png = Image.open(io.BytesIO(value.image.encoded_image_string))
  assert png.format == 'PNG'
  np.testing.assert_array_equal(np.asarray(png), picture)


def test_an_image_must_be_uint8_rgb(tmp_path):
  writer = MetricWriter(tmp_path / 'tb', enabled=True)
  with pytest.raises(ValueError, match=r"write_image\('x'\): expected uint8 \(height, width, 3\)"):
    writer.write_image(1, 'x', np.zeros((5, 7), np.float32))
  writer.close()


def test_a_disabled_writer_writes_nothing(tmp_path, caplog):
  writer = MetricWriter(tmp_path / 'tb', enabled=False)
  with caplog.at_level(logging.INFO):
    writer.write_scalars(1, {'train/loss': 6.9})
  writer.close()
  assert not (tmp_path / 'tb').exists()
  assert 'train/loss' not in caplog.text


def test_only_process_zero_writes_by_default(tmp_path):
  assert MetricWriter(tmp_path / 'tb').enabled  # A single process has index 0.


def test_unwritable_logdir_is_named(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  with pytest.raises(PermissionError,
                     match=re.escape(f'Cannot write TensorBoard events to {blocker}/tb')):
    MetricWriter(blocker / 'tb', enabled=True)
