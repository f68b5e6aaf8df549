"""The 'tfds' source: the TFDS catalog dataset `data.name`, prepared as ArrayRecord by TFDS.

TFDS downloads and writes it itself (into data.data_dir; manual downloads from
data.manual_dir), so its images are stored as the catalog has them and resized to
`image_size` when read (decode.py), not stored resized.
"""

import tensorflow_datasets as tfds

from alexnet_jax.data import datasets


class TfdsCatalog(datasets.Source):
  """The TFDS catalog dataset data.name."""

  name = 'tfds'

  def _builder(self):
    if not self.config.data.name:
      raise ValueError("data.source='tfds' needs data.name, the TFDS catalog name "
                       "(e.g. --config.data.name=cifar10)")
    return tfds.builder(self.config.data.name, data_dir=datasets.data_dir(self.config),
                        file_format='array_record')

  def dataset_dir(self) -> str:
    return str(self._builder().data_dir)

  def prepare(self) -> str:
    builder = self._builder()
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=datasets.manual_dir(self.config)))
    return str(builder.data_dir)

  def missing_message(self) -> str:
    name = self.config.data.name
    return (f'TFDS dataset {name!r} is not prepared as ArrayRecord in '
            f'{datasets.data_dir(self.config)} ({self.where()}). Run: '
            f'{datasets.PREPARE_COMMAND} (downloads it where TFDS can), or prepare it '
            f"elsewhere with tfds.builder({name!r}, file_format='array_record')"
            '.download_and_prepare() and copy it into data.data_dir.')
