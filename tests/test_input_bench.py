"""tools/input_bench.py: the benchmark command runs on an archived folder and prints a rate
for each stage (their form is checked, not their size)."""

import os
import re
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from alexnet_jax.data import decode

pytestmark = pytest.mark.multiprocess  # It runs the command.


def test_bench_command_on_an_archive(tmp_path):
  rng = np.random.default_rng(0)
  for split in ('train', 'val'):
    for class_name in ('a', 'b'):
      folder = tmp_path / 'images' / split / class_name
      os.makedirs(folder)
      for i in range(4):
        image = rng.integers(0, 256, (30 + i, 40, 3), dtype=np.uint8)
        (folder / f'{i}.jpg').write_bytes(decode.encode_jpeg(image, 90))
  archive = tmp_path / 'images.tar.gz'
  with tarfile.open(archive, 'w:gz') as tar:
    tar.add(tmp_path / 'images' / 'train', 'train')
    tar.add(tmp_path / 'images' / 'val', 'val')
  args = [sys.executable, '-m', 'alexnet_jax.tools.input_bench', f'--source={archive}',
          f'--work_dir={tmp_path / "work"}', '--workers=0', '--images=8', '--batches=2',
          '--config.train.batch_size=4', '--config.data.image_size=32',
          '--config.data.crop_size=24']
  out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
  assert '8 images, 32px -> 24px crops, batch 4' in out
  for label in ('decode (1 core)', 'decode+augment (1 core)',
                'pipeline, host mode, 0 workers', 'pipeline, device mode, 0 workers'):
    # The rates (wall clock, and per CPU-second where the CPU time was measurable).
    line = next(l for l in out.splitlines() if l.startswith(label))
    assert re.fullmatch(rf'{re.escape(label)} +\d+ images/s +(\d+|-) images/CPU-s', line), line
