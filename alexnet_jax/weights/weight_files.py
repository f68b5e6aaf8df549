"""Reading a state dict (parameter name -> array) from a file, without PyTorch.

One job: `read_state_dict(path)` returns {name: numpy array} from
- a PyTorch file written by `torch.save(model.state_dict(), path)` (the zip format of
  PyTorch >= 1.6: `<archive>/data.pkl`, a pickle of the dict, and `<archive>/data/<key>`,
  each tensor storage's raw bytes);
- `.npz` (numpy, no pickles allowed);
- `.safetensors` (an 8-byte little-endian header length, a JSON header, raw bytes).

The pickle is read safely: only the few globals a state dict needs are resolved (the
ordered dict, tensor rebuilding and the storage types, all to local stand-ins); any other
global in the file raises `WeightFileError` instead of running code from the file.
"""

import collections
import json
import os
import pickle
import zipfile

import ml_dtypes
import numpy as np

from alexnet_jax.runtime import errors


class WeightFileError(errors.UserError, ValueError):
  """A weights file that cannot be read as a state dict."""


# torch's storage classes (pickled as `torch.<Name>Storage`) -> numpy dtypes.
_STORAGE_DTYPES = {
    'FloatStorage': np.float32, 'DoubleStorage': np.float64, 'HalfStorage': np.float16,
    'BFloat16Storage': ml_dtypes.bfloat16, 'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8, 'ByteStorage': np.uint8,
    'BoolStorage': np.bool_,
}
_SAFETENSORS_DTYPES = {
    'F64': np.float64, 'F32': np.float32, 'F16': np.float16, 'BF16': ml_dtypes.bfloat16,
    'I64': np.int64, 'I32': np.int32, 'I16': np.int16, 'I8': np.int8, 'U8': np.uint8,
    'BOOL': np.bool_,
}


class _StateDict(collections.OrderedDict):
  """Stands in for the pickled OrderedDict; takes the `_metadata` attribute torch sets."""


class _StorageType:
  """Stands in for a `torch.<Name>Storage` class: just its dtype."""

  def __init__(self, dtype):
    self.dtype = np.dtype(dtype)


def _rebuild_tensor(storage: np.ndarray, offset: int, size, stride, *unused) -> np.ndarray:
  """`torch._utils._rebuild_tensor_v2`: a (strided) view of a storage, copied."""
  del unused  # requires_grad, backward hooks, metadata.
  if not size:
    return np.array(storage[offset])
  itemsize = storage.dtype.itemsize
  view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                         strides=tuple(s * itemsize for s in stride))
  return np.array(view)


def _rebuild_parameter(data: np.ndarray, *unused) -> np.ndarray:
  """`torch._utils._rebuild_parameter`: an nn.Parameter is its data here."""
  del unused
  return data


_GLOBALS = {
    ('collections', 'OrderedDict'): _StateDict,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    **{('torch', name): _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


class _SafeUnpickler(pickle.Unpickler):
  """Unpickles a torch state dict, resolving only `_GLOBALS`; storages come from the zip."""

  def __init__(self, file, archive: zipfile.ZipFile, prefix: str, path: str, little: bool):
    super().__init__(file)
    self._archive, self._prefix, self._path, self._little = archive, prefix, path, little
    self._storages = {}

  def find_class(self, module: str, name: str):
    found = _GLOBALS.get((module, name))
    if found is None:
      raise WeightFileError(
          f'{self._path} refers to {module}.{name}, which a state dict of tensors does not '
          'need; it was not loaded (a pickle can run code). Save the weights with '
          'torch.save(model.state_dict(), path), or as .npz or .safetensors.')
    return found

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and pid and pid[0] == 'storage'
            and isinstance(pid[1], _StorageType)):
      raise WeightFileError(f'{self._path}: unknown storage reference {pid!r} in data.pkl.')
    storage_type, key = pid[1], str(pid[2])
    if key not in self._storages:
      try:
        raw = self._archive.read(f'{self._prefix}data/{key}')
      except KeyError:
        raise WeightFileError(f'{self._path}: storage data/{key} is missing from the '
                              'archive; the file is truncated or damaged.') from None
      dtype = storage_type.dtype.newbyteorder('<' if self._little else '>')
      self._storages[key] = np.frombuffer(raw, dtype).astype(storage_type.dtype)
    return self._storages[key]


def _read_torch(path: str) -> dict:
  with zipfile.ZipFile(path) as archive:
    pickles = [n for n in archive.namelist() if n.endswith('data.pkl')]
    if len(pickles) != 1:
      raise WeightFileError(f'{path} is a zip but not a PyTorch file (no single data.pkl).')
    prefix = pickles[0][:-len('data.pkl')]
    names = set(archive.namelist())
    little = (archive.read(prefix + 'byteorder').decode().strip() != 'big'
              if prefix + 'byteorder' in names else True)
    with archive.open(pickles[0]) as f:
      return _SafeUnpickler(f, archive, prefix, path, little).load()


def _read_safetensors(path: str) -> dict:
  with open(path, 'rb') as f:
    raw = f.read()
  length = int.from_bytes(raw[:8], 'little')
  try:
    header = json.loads(raw[8:8 + length])
  except (json.JSONDecodeError, UnicodeDecodeError):
    raise WeightFileError(f'{path}: not a safetensors file (its header is not JSON).') from None
  data = memoryview(raw)[8 + length:]
  tensors = {}
  for name, entry in header.items():
    if name == '__metadata__':
      continue
    if entry['dtype'] not in _SAFETENSORS_DTYPES:
      raise WeightFileError(f'{path}: tensor {name} has dtype {entry["dtype"]}, which '
                            f'alexnet_jax does not read ({sorted(_SAFETENSORS_DTYPES)}).')
    begin, end = entry['data_offsets']
    tensors[name] = np.frombuffer(data[begin:end], np.dtype(
        _SAFETENSORS_DTYPES[entry['dtype']]).newbyteorder('<')).reshape(entry['shape']).copy()
  return tensors


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """{name: array} from a .pth/.pt (torch zip), .npz or .safetensors file.

  Raises:
    WeightFileError: the file is missing, of another kind, or not a flat dict of tensors.
  """
  path = os.path.expanduser(path)
  if not os.path.isfile(path):
    raise WeightFileError(f'Weights file {path} does not exist (model.pretrained).')
  if path.endswith('.safetensors'):
    state = _read_safetensors(path)
  elif path.endswith('.npz'):
    try:
      with np.load(path, allow_pickle=False) as f:
        state = {name: f[name] for name in f.files}
    except (ValueError, OSError) as e:
      raise WeightFileError(f'{path}: not a readable .npz of arrays ({e}).') from None
  elif zipfile.is_zipfile(path):
    state = _read_torch(path)
  else:
    raise WeightFileError(
        f'{path} is neither a PyTorch zip file (torch.save of PyTorch >= 1.6), nor .npz, '
        'nor .safetensors. Older PyTorch files: load and save them again with a recent '
        'PyTorch.')
  if not isinstance(state, dict) or not all(
      isinstance(k, str) and isinstance(v, np.ndarray) for k, v in state.items()):
    held = (f'a dict with {", ".join(map(str, list(state)[:6]))}' if isinstance(state, dict)
            else f'a {type(state).__name__}')
    raise WeightFileError(
        f'{path} does not hold a state dict (names -> tensors) but {held}. Save '
        'model.state_dict(), not the model or a training checkpoint.')
  return dict(state)
