"""Reading state dicts without PyTorch: torch's zip format, .npz, .safetensors, bad files."""

import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

import torch_zip
from alexnet_jax.weights import weight_files

ARRAYS = {
    'features.0.weight': np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2),
    'transposed': np.arange(6, dtype=np.float64).reshape(2, 3),
    'count': np.array(7, np.int64),
    'half': np.array([0.5, -2.0], np.float16),
}


def _check(state):
  assert list(state) == list(ARRAYS)
  for name, array in ARRAYS.items():
    assert state[name].dtype == array.dtype and state[name].shape == array.shape, name
    np.testing.assert_array_equal(state[name], array)


def test_torch_zip_format_written_here(tmp_path):
  path = str(tmp_path / 'w.pth')
  torch_zip.write(path, ARRAYS, archive='some_name', transpose=('transposed',))
  _check(weight_files.read_state_dict(path))


def test_files_saved_by_pytorch_itself(tmp_path):
  torch = pytest.importorskip('torch')
  net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
  state = net.state_dict()  # An OrderedDict with _metadata, and a 0-d int64 tensor.
  state['transposed'] = torch.arange(12.).reshape(3, 4).t()
  path = str(tmp_path / 'net.pth')
  torch.save(state, path)
  read = weight_files.read_state_dict(path)
  assert list(read) == list(state)
  for name, tensor in state.items():
    np.testing.assert_array_equal(read[name], tensor.numpy())
  # And the other way: torch reads the files the tests write (weights_only, its default).
  torch_zip.write(str(tmp_path / 'ours.pth'), ARRAYS, transpose=('transposed',))
  loaded = torch.load(str(tmp_path / 'ours.pth'))
  for name, array in ARRAYS.items():
    np.testing.assert_array_equal(loaded[name].numpy(), array)


def test_npz_and_safetensors(tmp_path):
  np.savez(tmp_path / 'w.npz', **ARRAYS)
  _check(weight_files.read_state_dict(str(tmp_path / 'w.npz')))
  kinds = {np.float32: 'F32', np.float64: 'F64', np.int64: 'I64', np.float16: 'F16'}
  header, blobs, offset = {'__metadata__': {'format': 'pt'}}, [], 0
  for name, array in ARRAYS.items():
    raw = array.tobytes()
    header[name] = {'dtype': kinds[array.dtype.type], 'shape': list(array.shape),
                    'data_offsets': [offset, offset + len(raw)]}
    blobs.append(raw)
    offset += len(raw)
  encoded = json.dumps(header).encode()
  (tmp_path / 'w.safetensors').write_bytes(
      len(encoded).to_bytes(8, 'little') + encoded + b''.join(blobs))
  _check(weight_files.read_state_dict(str(tmp_path / 'w.safetensors')))


class _Shell:
  """A pickle that runs a shell command when loaded."""

  def __init__(self, command: str):
    self.command = command

  def __reduce__(self):
    return os.system, (self.command,)


def test_a_pickle_that_runs_code_is_refused(tmp_path):
  path = str(tmp_path / 'evil.pth')
  marker = tmp_path / 'ran'
  buffer = io.BytesIO()
  pickle.dump({'x': _Shell(f'touch {marker}')}, buffer, protocol=2)
  with zipfile.ZipFile(path, 'w') as z:
    z.writestr('archive/data.pkl', buffer.getvalue())
  with pytest.raises(weight_files.WeightFileError, match=r'system.*not loaded'):
    weight_files.read_state_dict(path)
  assert not marker.exists()


def test_unreadable_files_say_what_they_are(tmp_path):
  with pytest.raises(weight_files.WeightFileError, match='does not exist'):
    weight_files.read_state_dict(str(tmp_path / 'missing.pth'))
  (tmp_path / 'text.pth').write_text('not weights')
  with pytest.raises(weight_files.WeightFileError, match='neither a PyTorch zip'):
    weight_files.read_state_dict(str(tmp_path / 'text.pth'))
  # A training checkpoint (a dict holding a state dict and an epoch) is not a state dict.
  torch_zip.write(str(tmp_path / 'ckpt.pth'), {'w': np.zeros(2, np.float32)})
  with zipfile.ZipFile(tmp_path / 'ckpt.pth') as z:
    files = {n: z.read(n) for n in z.namelist()}
  buffer = io.BytesIO()
  pickle.dump({'epoch': 3}, buffer, protocol=2)
  files['archive/data.pkl'] = buffer.getvalue()
  with zipfile.ZipFile(tmp_path / 'ckpt.pth', 'w') as z:
    for name, data in files.items():
      z.writestr(name, data)
  with pytest.raises(weight_files.WeightFileError, match='not a state dict|does not hold'):
    weight_files.read_state_dict(str(tmp_path / 'ckpt.pth'))
