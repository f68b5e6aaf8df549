"""The 'tfds' source: the TFDS catalog dataset `data.name`, prepared as ArrayRecord by TFDS.

TFDS downloads and writes it itself (into data.data_dir; manual downloads from
data.manual_dir), so its images are stored as the catalog has them and resized to
`image_size` when read (decode.py), not stored resized. What TFDS prints goes to the log:
it speaks of downloading even when nothing is downloaded.
"""

import contextlib
import io

from absl import logging

import tensorflow_datasets as tfds

from alexnet_jax.data import datasets
from alexnet_jax.runtime import errors


class TfdsCatalog(datasets.Source):
  """The TFDS catalog dataset data.name."""

  name = 'tfds'

  def _builder(self):
    if not self.config.data.name:
      raise errors.ConfigError("data.source='tfds' needs data.name, the TFDS catalog name "
                       "(e.g. --config.data.name=cifar10)")
    return tfds.builder(self.config.data.name, data_dir=datasets.data_dir(self.config),
                        file_format='array_record')

  def dataset_dir(self) -> str:
    return str(self._builder().data_dir)

  def prepare(self, say: datasets.Say = logging.info) -> str:
    builder = self._builder()
    say(f'Preparing the TFDS dataset {self.config.data.name!r} into {builder.data_dir} '
        '(TFDS downloads it if it can)...')
    with contextlib.redirect_stdout(io.StringIO()) as printed:
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
          manual_dir=datasets.manual_dir(self.config)))
    logging.info('TFDS: %s', printed.getvalue().strip())
    self.note_prepared()
    return str(builder.data_dir)

  def missing_message(self) -> str:
    name = self.config.data.name
    return (f'TFDS dataset {name!r} is not prepared as ArrayRecord in '
            f'{datasets.data_dir(self.config)} ({self.where()}). Run: '
            f'{datasets.prepare_command()} (downloads it where TFDS can), or prepare it '
            f"elsewhere with tfds.builder({name!r}, file_format='array_record')"
            '.download_and_prepare() and copy it into data.data_dir.')
