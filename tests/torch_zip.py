"""Writes numpy arrays as a PyTorch state-dict file without PyTorch (a helper for tests).

The file is what `torch.save(OrderedDict(...), path)` writes (PyTorch >= 1.6): a zip whose
`<archive>/data.pkl` pickles an OrderedDict of tensors, each rebuilt by
`torch._utils._rebuild_tensor_v2` from a storage saved as `<archive>/data/<key>`.
The pickler below writes torch's globals by name (torch itself is never imported), so
tests of the reader need no PyTorch; with PyTorch installed, `torch.load` reads these
files too (tests/test_weight_files.py checks it).
"""

import io
import pickle
import zipfile

import numpy as np

_STORAGES = {np.dtype(np.float32): 'FloatStorage', np.dtype(np.float64): 'DoubleStorage',
             np.dtype(np.int64): 'LongStorage', np.dtype(np.float16): 'HalfStorage'}


class Global:
  """A global written by module and name (pickle's GLOBAL opcode), never imported."""

  def __init__(self, module: str, name: str):
    self.module, self.name = module, name

  def __call__(self, *args):  # pickle wants a callable in a reduce tuple; never called.
    raise NotImplementedError(f'{self.module}.{self.name} is only written, not run.')


class _Storage:
  def __init__(self, key: str, array: np.ndarray):
    self.key, self.array = key, array


class _Tensor:
  """Pickles as `_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`."""

  def __init__(self, storage: _Storage, shape: tuple, strides: tuple, offset: int = 0):
    self.storage, self.shape, self.strides, self.offset = storage, shape, strides, offset

  def __reduce__(self):
    return (Global('torch._utils', '_rebuild_tensor_v2'),
            (self.storage, self.offset, self.shape, self.strides, False, _EmptyOrderedDict()))


class _EmptyOrderedDict:
  def __reduce__(self):
    return Global('collections', 'OrderedDict'), ()


class _Pickler(pickle._Pickler):  # The pure-Python pickler: its dispatch table is open.
  dispatch = dict(pickle._Pickler.dispatch)

  def save_named_global(self, obj: Global):
    self.write(pickle.GLOBAL + f'{obj.module}\n{obj.name}\n'.encode())

  dispatch[Global] = save_named_global

  def persistent_id(self, obj):
    if isinstance(obj, _Storage):
      return ('storage', Global('torch', _STORAGES[obj.array.dtype]), obj.key, 'cpu',
              obj.array.size)
    return None


class _StateDict(dict):
  def __reduce__(self):
    return Global('collections', 'OrderedDict'), (), None, None, iter(self.items())


def write(path: str, arrays: dict, archive: str = 'archive',
          transpose: tuple[str, ...] = ()) -> None:
  """Writes `arrays` ({name: numpy array}) as a torch state dict at `path`.

  Names in `transpose` are stored as a transposed view of a contiguous storage (strides
  reversed), as torch saves a `.t()` tensor, to exercise strided rebuilding.
  """
  tensors, storages = _StateDict(), []
  for i, (name, array) in enumerate(arrays.items()):
    array = np.asarray(array)
    if name in transpose:
      base = np.ascontiguousarray(array.T)
      storage = _Storage(str(i), base)
      strides = tuple(s // base.itemsize for s in base.strides)[::-1]
      tensors[name] = _Tensor(storage, array.shape, strides)
    else:
      base = np.array(array, order='C')  # ascontiguousarray would make a 0-d array 1-d.
      storage = _Storage(str(i), base)
      tensors[name] = _Tensor(storage, array.shape, tuple(s // base.itemsize for s in base.strides))
    storages.append(storage)
  buffer = io.BytesIO()
  _Pickler(buffer, protocol=2).dump(tensors)
  with zipfile.ZipFile(path, 'w') as z:
    z.writestr(f'{archive}/data.pkl', buffer.getvalue())
    z.writestr(f'{archive}/byteorder', 'little')
    for storage in storages:
      little_endian = storage.array.astype(storage.array.dtype.newbyteorder('<'))
      z.writestr(f'{archive}/data/{storage.key}', little_endian.tobytes())
    z.writestr(f'{archive}/version', '3\n')

