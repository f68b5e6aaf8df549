"""run/workdir_lock.py: one writer per workdir: a second run is refused, a dead holder's
lock is taken over."""

import json
import os
import subprocess
import sys
import time

import pytest

from alexnet_jax.run import workdir_lock
from alexnet_jax.run.workdir_lock import WorkdirLock, WorkdirLockedError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_HOLDER = '''
import sys, time
from alexnet_jax.run.workdir_lock import WorkdirLock
lock = WorkdirLock(sys.argv[1]).acquire()
print('locked', flush=True)
time.sleep(600)
'''


def _hold_in_another_process(workdir) -> subprocess.Popen:
  holder = subprocess.Popen([sys.executable, '-c', _HOLDER, str(workdir)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline() == 'locked\n'
  return holder


@pytest.mark.multiprocess
def test_a_second_holder_is_refused_naming_the_first_until_it_dies(tmp_path):
  holder = _hold_in_another_process(tmp_path)
  try:
    with pytest.raises(WorkdirLockedError,
                       match=rf'{tmp_path} is in use by another run: process {holder.pid} on '
                             r'host \S+ \(started .*, last heartbeat \d+ s ago: -c '
                             rf'{tmp_path}\)\..*another --workdir.*delete .*run\.lock'):
      WorkdirLock(str(tmp_path)).acquire()
  finally:
    holder.kill()  # kill -9: the kernel releases its flock.
    holder.wait()
  with WorkdirLock(str(tmp_path)) as lock:
    with open(lock.path) as f:
      record = json.load(f)
    assert record['pid'] == os.getpid() and record['released'] is False
  with open(os.path.join(tmp_path, workdir_lock.FILE)) as f:
    assert json.load(f)['released'] is True


def test_a_live_holder_on_another_host_is_refused_a_silent_one_taken_over(tmp_path):
  path = tmp_path / workdir_lock.FILE
  elsewhere = {'host': 'another-node', 'pid': 4242, 'started': time.time() - 60,
               'command': 'python -m alexnet_jax.main', 'released': False}
  # Its flock does not reach this host (as on some shared file systems); its heartbeat does.
  path.write_text(json.dumps({**elsewhere, 'heartbeat': time.time() - 5}))
  with pytest.raises(WorkdirLockedError, match='process 4242 on host another-node'):
    WorkdirLock(str(tmp_path)).acquire()
  path.write_text(json.dumps({**elsewhere, 'heartbeat': time.time() - 2 * 3600}))
  WorkdirLock(str(tmp_path)).acquire().release()
  path.write_text('{"host": "another-no')  # Cut short by a crash mid-write.
  WorkdirLock(str(tmp_path)).acquire().release()


def test_the_heartbeat_is_written_while_held(tmp_path):
  lock = WorkdirLock(str(tmp_path), heartbeat_seconds=0.1).acquire()
  with open(lock.path) as f:
    first = json.load(f)['heartbeat']
  beat = first
  for _ in range(300):  # Every 0.1 s; a loaded machine may take longer: up to 30 s.
    time.sleep(0.1)
    with open(lock.path) as f:
      try:
        beat = json.load(f)['heartbeat']
      except ValueError:  # Caught between the rewrite's truncate and its write.
        pass
    if beat != first:
      break
  lock.release()
  assert beat > first


def test_a_workdir_made_only_for_the_lock_is_removed_again(tmp_path):
  WorkdirLock(str(tmp_path / 'new')).acquire().release()
  assert not (tmp_path / 'new').exists()
  lock = WorkdirLock(str(tmp_path / 'used')).acquire()
  (tmp_path / 'used' / 'config.json').write_text('{}')
  lock.release()
  assert sorted(os.listdir(tmp_path / 'used')) == ['config.json', workdir_lock.FILE]


@pytest.mark.multiprocess
def test_main_refuses_a_locked_workdir_in_one_paragraph(tmp_path):
  holder = _hold_in_another_process(tmp_path / 'run')
  try:
    proc = subprocess.run(
        [sys.executable, '-m', 'alexnet_jax.main', '--config=configs/demo.py',
         f'--workdir={tmp_path / "run"}', f'--config.data.data_dir={tmp_path / "data"}'],
        cwd=REPO, capture_output=True, text=True, timeout=120)
  finally:
    holder.kill()
    holder.wait()
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.startswith(f'Error: {tmp_path / "run"} is in use by another run: '
                                f'process {holder.pid} on host '), proc.stderr
  assert 'Traceback' not in proc.stderr
  assert sorted(os.listdir(tmp_path / 'run')) == ['logs', workdir_lock.FILE]
  assert not (tmp_path / 'data').exists()  # Refused before it prepared any data.
