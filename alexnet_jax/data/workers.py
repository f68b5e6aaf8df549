"""Grain worker processes and the shared-memory batches they send back.

One job: run a batched Grain dataset in `data.worker_count` processes (`to_iterator`),
with each batch assembled in place, one array per batch written row by row, in shared
memory inside a worker (`BatchTransform`): per-image arrays kept alive until a stack, or
float32 batches copied into shared memory, cost more than the JPEG decoding on a small
host. A worker reuses its shared-memory blocks once this process has read them (see
`_Blocks`). Used by the pipelines (pipeline.py) and the statistics pass (statistics.py).
"""

import dataclasses
from multiprocessing import shared_memory

from absl import flags
import grain
import numpy as np

from alexnet_jax.data import decode
from alexnet_jax.runtime import child_processes, shared_memory_leftovers


def records(records) -> dict:
  """Batch function: the encoded images as a list (stacking would pad bytes with zeros)."""
  return {'image': [r['image'] for r in records],
          'label': np.array([r['label'] for r in records], np.int32)}


_HEADER = 64  # Bytes before a block's array: byte 0 says whether the block is free.
_FREE, _IN_USE = 0, 1


@dataclasses.dataclass(frozen=True)
class _BlockRef:
  """What a worker sends for a batch array: the shared-memory block that holds it."""
  name: str
  shape: tuple[int, ...]
  dtype: str


class _Blocks:
  """A worker's shared-memory blocks, each reused once the main process has read it.

  Grain's `SharedMemoryArray` is a new block per batch: here its first write faults in
  zeroed tmpfs pages, the reader's first read maps them again and the unlink frees them,
  many times the cost of rewriting a block already mapped (docs/benchmarks.md, "Input
  pipeline"). So the worker keeps its blocks and sends `_BlockRef`s, and `_Received`, in
  the main process, marks a block free when done with it. Blocks in flight are bounded by
  the prefetch buffers, so a worker holds a handful.
  """

  def __init__(self):
    self._blocks = []

  def empty(self, shape, dtype) -> tuple[np.ndarray, _BlockRef]:
    """A batch array in a free block (a new one if none is), and its reference."""
    dtype = np.dtype(dtype)
    size = _HEADER + int(np.prod(shape)) * dtype.itemsize
    block = next((b for b in self._blocks if b.size == size and b.buf[0] == _FREE), None)
    if block is None:
      block = shared_memory.SharedMemory(create=True, size=size)
      self._blocks.append(block)
    block.buf[0] = _IN_USE
    array = np.ndarray(shape, dtype, buffer=block.buf, offset=_HEADER)
    return array, _BlockRef(block.name, tuple(shape), dtype.str)

  def __getstate__(self):
    return {'_blocks': []}  # Pickled into a worker before any block exists.


class _Received(grain.transforms.Map):
  """In the main process: a worker's batch out of its blocks, which are then freed.

  `finish(batch)` makes the output from views of the blocks (it must not keep them); by
  default the arrays are copied. Each block is opened once and unlinked at once: the
  worker and this process keep their mappings. A block whose reference never arrives (a
  batch still buffered at `set_state` or `close`) is unlinked by Python's resource
  tracker when the program ends.
  """

  def __init__(self, finish=None):
    self._finish = finish
    self._open = {}

  def _view(self, ref: _BlockRef) -> tuple[np.ndarray, shared_memory.SharedMemory]:
    block = self._open.get(ref.name)
    if block is None:
      block = self._open[ref.name] = shared_memory.SharedMemory(ref.name)
      block.unlink()
    return np.ndarray(ref.shape, ref.dtype, buffer=block.buf, offset=_HEADER), block

  def map(self, batch):
    views, blocks = {}, []
    for key, value in batch.items():
      if isinstance(value, _BlockRef):
        views[key], block = self._view(value)
        blocks.append(block)
      else:
        views[key] = value
    if self._finish is None:
      out = {key: np.array(value) for key, value in views.items()}
    else:
      out = self._finish(views)
    for block in blocks:
      block.buf[0] = _FREE
    return out


class BatchTransform:
  """Shared by the batch transforms: where a batch's arrays are allocated.

  Each transform fills one array per batch row by row, so no per-image array is kept
  alive until a stack (at 600 KB per float32 224x224 patch, that allocation churn halved
  the throughput). In a Grain worker the batch is allocated in one of the worker's
  shared-memory blocks (`_Blocks`) and only its reference is sent.
  """

  def __init__(self, size: int, shared_memory: bool):
    self._size = size
    self._blocks = _Blocks() if shared_memory else None

  def _empty(self, shape, dtype) -> tuple[np.ndarray, np.ndarray | _BlockRef]:
    """A batch array to fill, and what to send for it once filled."""
    if self._blocks is not None:
      return self._blocks.empty(shape, dtype)
    array = np.empty(shape, dtype)
    return array, array

  def _decode(self, data: bytes, channels: str = 'RGB') -> np.ndarray:
    try:
      return decode.decode_to_square(data, self._size, channels=channels)
    except decode.DecodeError as e:
      raise decode.DecodeError(f'{e}. Prepared datasets hold only decodable images: '
                               'prepare the data again.') from e


def _init_worker(worker_index: int, worker_count: int) -> None:
  """In each worker: Ctrl-C at a terminal reaches the workers too; the main process alone
  acts on it (runtime/preemption.py) and ends the workers when it stops. They die with it
  if it is killed."""
  del worker_index, worker_count
  child_processes.die_with_parent()


def to_iterator(ds: grain.MapDataset, config, finish=None):
  """Batched MapDataset -> iterator, decoded in `data.worker_count` processes.

  `finish(batch)`, if given, makes each output batch in this process from what the
  workers send.
  """
  # Elements here are whole batches: keep the in-process read-ahead to a few of them.
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2))
  if config.data.worker_count:
    if not flags.FLAGS.is_parsed():
      # Grain's workers read absl flags. Outside an absl app (pytest, a notebook), use
      # their defaults rather than fail in the worker.
      flags.FLAGS.mark_as_parsed()
    shared_memory_leftovers.silence_warnings()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=config.data.worker_count,
        per_worker_buffer_size=config.data.worker_buffer_size),
        worker_init_fn=_init_worker)
    it_ds = it_ds.map(_Received(finish))
  elif finish is not None:
    it_ds = it_ds.map(finish)
  return iter(it_ds)
