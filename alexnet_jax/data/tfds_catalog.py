"""The 'tfds' source: the TFDS catalog dataset `data.name`, prepared as ArrayRecord by TFDS.

TFDS downloads and writes it itself (into data.data_dir; manual downloads from
data.manual_dir), so its images are stored as the catalog has them and resized to
`image_size` when read (decode.py), not stored resized. What TFDS prints goes to the log:
it speaks of downloading even when nothing is downloaded. The catalog's builders decode
or encode their images with TensorFlow, so preparing needs it (reading does not): without
it the error says what to install.
"""

import contextlib
import io

from absl import logging

import tensorflow_datasets as tfds

from alexnet_jax.data import datasets
from alexnet_jax.runtime import errors


# What preparing needs beside requirements.txt (pip resolves it with those pins).
TENSORFLOW = 'tensorflow-cpu==2.21.0'


class TfdsCatalog(datasets.Source):
  """The TFDS catalog dataset data.name."""

  name = 'tfds'

  def _builder(self):
    if not self.config.data.name:
      raise errors.ConfigError("data.source='tfds' needs data.name, the TFDS catalog name "
                       "(e.g. --config.data.name=cifar10)")
    with datasets.temporary_files_removed():
      return tfds.builder(self.config.data.name, data_dir=datasets.data_dir(self.config),
                          file_format='array_record')

  def dataset_dir(self) -> str:
    return str(self._builder().data_dir)

  def prepare(self, say: datasets.Say = logging.info) -> str:
    builder = self._builder()
    say(f'Preparing the TFDS dataset {self.config.data.name!r} into {builder.data_dir} '
        '(TFDS downloads it if it can)...')
    with contextlib.redirect_stdout(io.StringIO()) as printed, \
        datasets.temporary_files_removed():
      try:
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=datasets.manual_dir(self.config)))
      except ModuleNotFoundError as e:
        if "No module named 'tensorflow'" not in str(e):
          raise
        raise datasets.DataMissingError(self._needs_tensorflow()) from e
    logging.info('TFDS: %s', printed.getvalue().strip())
    self.note_prepared()
    return str(builder.data_dir)

  def _needs_tensorflow(self) -> str:
    return (f'Preparing the TFDS catalog dataset {self.config.data.name!r} needs TensorFlow, '
            'which is not installed: the catalog\'s builders decode or encode the images '
            'with it (reading the prepared data does not need it). Install it for the '
            f'preparation with pip install {TENSORFLOW} (that version installs beside '
            'requirements.txt\'s pins) and run the same command again; or prepare the '
            "dataset's official archive with data.source='folder' (README, \"Data\").")

  def missing_message(self) -> str:
    name = self.config.data.name
    return (f'TFDS dataset {name!r} is not prepared as ArrayRecord in '
            f'{datasets.data_dir(self.config)} ({self.where()}). Run: '
            f'{datasets.prepare_command()} (downloads it where TFDS can), or prepare it '
            f"elsewhere with tfds.builder({name!r}, file_format='array_record')"
            '.download_and_prepare() and copy it into data.data_dir.')
