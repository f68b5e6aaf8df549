"""Orbax checkpoints: roundtrip, retention, resharding, kill safety, errors."""

import os
import pathlib
import re
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from alexnet_jax.run.checkpointing import CheckpointDamagedError, Checkpointer

REPO = pathlib.Path(__file__).resolve().parents[1]


def _state(sharding=None, kernel_shape=(8, 4)):
  """A small train state: parameters, velocity, step, RNG key and LR factor."""
  kernel = jnp.arange(np.prod(kernel_shape), dtype=jnp.float32).reshape(kernel_shape)
  if sharding is not None:
    kernel = jax.device_put(kernel, sharding)
  params = {'conv1': {'kernel': kernel, 'bias': jnp.ones(4)}}
  return {'step': jnp.int32(7), 'params': params,
          'opt_state': {'velocity': jax.tree.map(lambda p: -p / 10, params)},
          'rng': jax.random.key(3), 'factor': jnp.float32(0.1)}


def _abstract(state):
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_array_equal(x, y)


def _without_rng(state):
  return {k: v for k, v in state.items() if k != 'rng'}


def test_roundtrip_restores_state_and_meta(tmp_path):
  state = _state()
  ckpt = Checkpointer(tmp_path, keep=2, keep_best=True, async_save=True)
  ckpt.save(5, state, meta={'epoch': 1.5, 'plateau': {'best': 0.4, 'num_drops': 1}})
  ckpt.close()

  ckpt = Checkpointer(tmp_path, keep=2, keep_best=True, async_save=True)
  assert ckpt.latest_step() == 5
  restored, meta = ckpt.restore(None, _abstract(state))
  ckpt.close()
  _assert_trees_equal(restored, state)
  assert meta == {'epoch': 1.5, 'plateau': {'best': 0.4, 'num_drops': 1}}


def test_state_may_be_donated_once_save_returns(tmp_path):
  state = _state()
  copy = jax.tree.map(np.asarray, _without_rng(state))
  ckpt = Checkpointer(tmp_path, keep=1, keep_best=False, async_save=True)
  abstract = _abstract(state)
  ckpt.save(1, state)
  for leaf in jax.tree.leaves(_without_rng(state)):
    leaf.delete()  # What donate_argnums does to the old state in the next train step.
  ckpt.wait_until_finished()
  restored, meta = ckpt.restore(1, abstract)
  ckpt.close()
  assert meta == {}
  jax.tree.map(np.testing.assert_array_equal, _without_rng(restored), copy)


def test_keeps_the_last_n_plus_the_best_by_validation_error(tmp_path):
  state = _state()
  ckpt = Checkpointer(tmp_path, keep=2, keep_best=True, async_save=True)
  kept = []
  for step, error in [(1, 0.5), (2, 0.3), (3, None), (4, 0.4), (5, None), (6, 0.6)]:
    ckpt.save(step, state, val_top1_error=error)
    ckpt.wait_until_finished()
    kept.append(ckpt.all_steps())
  assert kept == [[1], [1, 2], [2, 3], [2, 3, 4], [2, 4, 5], [2, 5, 6]]
  assert ckpt.best_step() == 2
  ckpt.close()

  # A restarted run ranks the old checkpoints by the errors stored with them.
  ckpt = Checkpointer(tmp_path, keep=2, keep_best=True, async_save=True)
  ckpt.save(7, state, val_top1_error=0.35)
  ckpt.wait_until_finished()
  assert ckpt.all_steps() == [2, 6, 7]
  ckpt.save(8, state, val_top1_error=0.1)
  ckpt.wait_until_finished()
  assert ckpt.all_steps() == [7, 8]
  assert ckpt.best_step() == 8
  ckpt.close()


def test_without_keep_best_only_the_last_n_stay(tmp_path):
  ckpt = Checkpointer(tmp_path, keep=2, keep_best=False, async_save=False)
  for step, error in [(1, 0.1), (2, 0.5), (3, 0.6)]:
    ckpt.save(step, _state(), val_top1_error=error)
  assert ckpt.all_steps() == [2, 3]
  ckpt.close()


def test_restores_onto_a_different_mesh(tmp_path):
  saving = jax.make_mesh((4, 2), ('data', 'tower'))
  state = _state(NamedSharding(saving, P('data', 'tower')))
  ckpt = Checkpointer(tmp_path, keep=1, keep_best=False, async_save=True)
  ckpt.save(1, state)
  ckpt.wait_until_finished()

  restoring = jax.make_mesh((2, 4), ('data', 'tower'))
  target = NamedSharding(restoring, P(None, 'data'))
  abstract = _abstract(state)
  abstract['params']['conv1']['kernel'] = jax.ShapeDtypeStruct((8, 4), jnp.float32,
                                                               sharding=target)
  restored, _ = ckpt.restore(1, abstract)
  ckpt.close()
  kernel = restored['params']['conv1']['kernel']
  assert kernel.sharding == target
  assert kernel.addressable_shards[0].data.shape == (8, 2)
  _assert_trees_equal(restored, state)


_KILLED_CHILD = textwrap.dedent('''
    import os, signal, sys
    import jax.numpy as jnp
    from orbax.checkpoint._src.path import atomicity
    from alexnet_jax.run.checkpointing import Checkpointer

    directory, mode = sys.argv[1:]
    ckpt = Checkpointer(directory, keep=3, keep_best=True, async_save=True)
    ckpt.save(1, {'w': jnp.full((2048, 2048), 1.0)}, meta={'step': 1})
    ckpt.wait_until_finished()

    async def die(*args, **kwargs):
      os.kill(os.getpid(), signal.SIGKILL)

    if mode == 'before_rename':  # Everything written, only the final rename missing.
      atomicity.async_path.rename = die
    ckpt.save(2, {'w': jnp.full((2048, 2048), 2.0)}, meta={'step': 2})
    if mode == 'after_save_returns':  # 16 MB still being written in the background.
      os.kill(os.getpid(), signal.SIGKILL)
    ckpt.wait_until_finished()
    print('not killed')
    ''')


@pytest.mark.multiprocess
@pytest.mark.parametrize('mode', ['after_save_returns', 'before_rename'])
def test_a_kill_mid_save_keeps_the_last_finished_checkpoint(tmp_path, mode):
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS='cpu')
  child = subprocess.run([sys.executable, '-c', _KILLED_CHILD, str(tmp_path), mode],
                         env=env, capture_output=True, text=True, timeout=120)
  assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr
  names = {p.name for p in tmp_path.iterdir()}
  assert '2' not in names  # Killed before step 2 was finished ...
  if mode == 'before_rename':  # ... with all of it written to the temporary directory.
    assert '2.orbax-checkpoint-tmp' in names

  ckpt = Checkpointer(tmp_path, keep=3, keep_best=True, async_save=True)
  assert ckpt.latest_step() == 1
  abstract = {'w': jax.ShapeDtypeStruct((2048, 2048), jnp.float32,
                                        sharding=jax.sharding.SingleDeviceSharding(
                                            jax.devices()[0]))}
  restored, meta = ckpt.restore(None, abstract)
  np.testing.assert_array_equal(restored['w'], 1.0)
  assert meta == {'step': 1}
  # Opening the directory removed the unfinished save (Orbax would also replace it if the
  # resumed run saved step 2 again).
  ckpt.save(3, {'w': jnp.full((2048, 2048), 3.0)})
  ckpt.close()
  assert sorted(p.name for p in tmp_path.iterdir()) == ['1', '3']


def test_unwritable_directory_is_named(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  expected = re.escape(f'Cannot write checkpoints to {blocker}/ckpt') + '.*--workdir'
  with pytest.raises(PermissionError, match=expected):
    Checkpointer(blocker / 'ckpt')


def test_shape_mismatch_names_the_parameter_and_the_config(tmp_path):
  ckpt = Checkpointer(tmp_path, keep=1, keep_best=False, async_save=False)
  ckpt.save(1, _state())
  wider = _abstract(_state(kernel_shape=(8, 6)))
  with pytest.raises(ValueError, match=r"'params/conv1/kernel' has shape \(8, 4\) there but "
                     r'\(8, 6\) in the current model;.* The current config differs'):
    ckpt.restore(1, wider)
  deeper = _abstract(_state())
  deeper['params']['conv6'] = {'kernel': deeper['params']['conv1']['kernel']}
  with pytest.raises(ValueError, match="'params/conv6/kernel' is missing there.*config differs"):
    ckpt.restore(1, deeper)
  shallower = _abstract(_state())
  del shallower['opt_state']
  with pytest.raises(ValueError, match="'opt_state/velocity/conv1/bias' is there but the "
                     "current model lacks it; 'opt_state/velocity/conv1/kernel'"):
    ckpt.restore(1, shallower)
  ckpt.close()


def test_missing_checkpoint_and_unplaced_state_are_clear(tmp_path):
  ckpt = Checkpointer(tmp_path, keep=1, keep_best=False, async_save=False)
  expected = 'No finished checkpoint.*' + re.escape(str(tmp_path))
  with pytest.raises(FileNotFoundError, match=expected):
    ckpt.restore(None, _abstract(_state()))
  ckpt.save(1, _state())
  with pytest.raises(FileNotFoundError, match=r'step 3 .*available: \[1\]'):
    ckpt.restore(3, _abstract(_state()))
  unplaced = _abstract(_state())
  unplaced['factor'] = jax.ShapeDtypeStruct((), jnp.float32)
  with pytest.raises(ValueError, match="'factor' has no sharding"):
    ckpt.restore(1, unplaced)
  ckpt.close()


def test_meta_that_is_not_json_fails_at_save(tmp_path):
  ckpt = Checkpointer(tmp_path, keep=1, keep_best=False, async_save=True)
  with pytest.raises(TypeError, match='must be JSON-able.*float32'):
    ckpt.save(1, _state(), meta={'error': np.float32(0.5)})
  ckpt.close()
  assert ckpt.all_steps() == []


def test_read_only_restores_without_creating_or_writing(tmp_path):
  ckpt = Checkpointer(tmp_path / 'run', keep=1, keep_best=False, async_save=False)
  ckpt.save(1, _state())
  ckpt.close()
  reader = Checkpointer(tmp_path / 'run', read_only=True)
  restored, _ = reader.restore(None, _abstract(_state()))
  _assert_trees_equal(restored, _state())
  assert Checkpointer(tmp_path / 'absent', read_only=True).latest_step() is None
  assert not (tmp_path / 'absent').exists()


def _two_steps(directory, second=None):
  """Steps 1 and 2 (`second`, else a state with other numbers) saved and verified."""
  ckpt = Checkpointer(directory, keep=3, keep_best=False, async_save=True)
  ckpt.save(1, _state(kernel_shape=(64, 64)))
  ckpt.save(2, second if second is not None else jax.tree.map(
      lambda x: x * 2 if jnp.issubdtype(x.dtype, jnp.inexact) else x,
      _state(kernel_shape=(64, 64))))
  ckpt.close()
  return ckpt


def _largest_file(step_dir: pathlib.Path) -> pathlib.Path:
  return max((p for p in step_dir.rglob('*') if p.is_file()), key=lambda p: p.stat().st_size)


def _truncate(step_dir):
  path = _largest_file(step_dir)
  path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def _flip_one_bit(step_dir):
  path = _largest_file(step_dir)
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0x10
  path.write_bytes(bytes(data))


def _empty_manifest(step_dir):
  (step_dir / 'state' / 'manifest.ocdbt').write_bytes(b'')


def _junk_meta(step_dir):
  (step_dir / 'meta' / 'metadata').write_text('{"plateau": [1, 2')


@pytest.mark.parametrize('damage,why', [
    (_truncate, r'its file state/\S+ has \d+ bytes where \d+ were saved'),
    (_flip_one_bit, r'its file state/\S+ no longer matches the checksum taken when it was '
                    r'saved'),
    (_empty_manifest, r'its file state/manifest.ocdbt has 0 bytes where \d+ were saved'),
    (_junk_meta, r'its file meta/metadata has \d+ bytes where \d+ were saved')])
def test_a_damaged_newest_step_is_passed_over_said_and_set_aside(tmp_path, damage, why):
  _two_steps(tmp_path / 'ckpt')
  damage(tmp_path / 'ckpt' / '2')
  said = []
  ckpt = Checkpointer(tmp_path / 'ckpt', keep=3, keep_best=False)
  restored, _ = ckpt.restore(None, _abstract(_state(kernel_shape=(64, 64))), say=said.append)
  _assert_trees_equal(restored, _state(kernel_shape=(64, 64)))  # Step 1's numbers.
  [paragraph] = said
  assert re.search(r'Damaged checkpoint in \S+/ckpt \(step 2: ' + why + r'\), so step 1 is '
                   r'used instead\. They were moved, not deleted, to \S+/ckpt_damaged: '
                   'delete them there once you no longer need them.', paragraph), paragraph
  assert ckpt.all_steps() == [1]
  [moved] = (tmp_path / 'ckpt_damaged').iterdir()
  assert moved.name.startswith('2_') and (moved / 'digest.json').exists()
  ckpt.save(2, _state(kernel_shape=(64, 64)))  # The step number is free again.
  ckpt.close()
  assert ckpt.all_steps() == [1, 2]


def test_a_reader_leaves_damage_in_place_and_an_asked_for_step_is_refused(tmp_path):
  _two_steps(tmp_path)
  _flip_one_bit(tmp_path / '2')
  reader = Checkpointer(tmp_path, read_only=True)
  said = []
  reader.restore(None, _abstract(_state(kernel_shape=(64, 64))), say=said.append)
  assert 'so step 1 is used instead. They were left in place and not loaded.' in said[0]
  assert reader.all_steps() == [1, 2]
  with pytest.raises(CheckpointDamagedError, match=r'step 2: its file .* checksum.*give '
                     r'another eval.checkpoint_step \(available: \[1, 2\]\)'):
    reader.restore(2, _abstract(_state(kernel_shape=(64, 64))))
  _truncate(tmp_path / '1')
  with pytest.raises(CheckpointDamagedError, match=r'step 2: .*; step 1: .*no intact '
                     'checkpoint is left: start afresh in another --workdir'):
    reader.restore(None, _abstract(_state(kernel_shape=(64, 64))))


def test_a_step_without_digest_is_used_only_when_it_reads_whole_and_finite(tmp_path):
  nan = _state(kernel_shape=(64, 64))
  nan['opt_state']['velocity']['conv1']['bias'] = jnp.full(4, jnp.nan)
  _two_steps(tmp_path, second=nan)
  (tmp_path / '2' / 'digest.json').unlink()  # As saved by a version without digests.
  reader = Checkpointer(tmp_path, read_only=True)
  said = []
  reader.restore(None, _abstract(_state(kernel_shape=(64, 64))), say=said.append)
  assert 'step 2: its weights or momentum hold NaN or infinite values), so step 1' in said[0]
  (tmp_path / '1' / 'digest.json').unlink()
  restored, _ = reader.restore(1, _abstract(_state(kernel_shape=(64, 64))))
  _assert_trees_equal(restored, _state(kernel_shape=(64, 64)))
  _junk_meta(tmp_path / '1')
  with pytest.raises(CheckpointDamagedError, match=r'step 1: it could not be read'):
    reader.restore(1, _abstract(_state(kernel_shape=(64, 64))))


_FULL_DISK_CHILD = textwrap.dedent('''
    import resource, signal, sys, time
    import jax.numpy as jnp
    import numpy as np
    from alexnet_jax.run.checkpointing import Checkpointer, CheckpointSaveError
    ckpt = Checkpointer(sys.argv[1], keep=3, keep_best=False, async_save=True)
    ckpt.save(1, {'w': jnp.ones(8)})
    ckpt.wait_until_finished()
    # Files may now grow to 1 MB: step 2's 4 MB of random numbers cannot be written (EFBIG,
    # as a full disk gives ENOSPC), and the save fails in Orbax's background thread.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
    ckpt.save(2, {'w': jnp.asarray(np.random.default_rng(0).random(1 << 20, np.float32))})
    for _ in range(600):
      try:
        ckpt.check()
      except CheckpointSaveError as e:
        print('check:', e, flush=True)
        break
      time.sleep(0.1)
    try:
      ckpt.close()
    except CheckpointSaveError as e:
      print('close:', e, flush=True)
    ''')


@pytest.mark.multiprocess
def test_a_failed_background_save_is_reported_by_check_and_close(tmp_path):
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS='cpu')
  child = subprocess.run([sys.executable, '-c', _FULL_DISK_CHILD, str(tmp_path)],
                         env=env, capture_output=True, text=True, timeout=120)
  assert child.returncode == 0, child.stderr[-3000:]
  lines = child.stdout.splitlines()
  assert [line.split(':')[0] for line in lines] == ['check', 'close'], child.stdout
  assert re.search(r'Saving the checkpoint of step 2 to \S+ failed \(File too large, errno 27; '
                   r'[\d.]+ GB free there now\)\. The run stopped there\. The last complete '
                   r'checkpoint is step 1\. Free some space', lines[0]), lines[0]
  assert Checkpointer(tmp_path, read_only=True).all_steps() == [1]
