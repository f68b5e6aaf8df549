"""training/train.py: the training loop end to end on generated data, resume, and its
error paths (the config, the data, the workdir, a non-finite loss, a failed save).

The tiny config, its data directory and `final_params` are conftest.py's fixtures;
evaluation is in test_evaluate.py, eval.only and ensembles in test_evaluate_saved.py.
"""

import glob
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from alexnet_jax.run import checkpointing, saved_config
from alexnet_jax.training import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_end_to_end_on_two_towers(end_to_end_run):
  # One batch of training images, no dropout: the loss must fall within six steps.
  out, workdir = end_to_end_run.console, end_to_end_run.workdir
  assert 'mesh data=4 x tower=2' in out and 'Compiling the training step' in out
  losses = [float(line.split(' loss ')[1].split()[0]) for line in out.splitlines()
            if line.startswith('step ') and ' loss ' in line]
  assert len(losses) == 6 and losses[-1] < losses[0] and np.mean(losses[3:]) < losses[0]
  saved = json.load(open(workdir / 'results.json'))
  assert saved['step'] == 6 and saved['final']['count'] == 37
  for key in ('centre_top1_error', 'centre_top5_error', 'ten_patch_top1_error',
              'ten_patch_top5_error'):
    assert 0.0 <= saved['final'][key] <= 1.0
  assert [h['step'] for h in saved['history']] == [3, 6]
  assert end_to_end_run.results['final'] == saved['final']
  assert json.load(open(workdir / 'config.json'))['mesh']['tower'] == 2
  assert glob.glob(str(workdir / 'tensorboard' / 'events*'))
  steps = sorted(int(os.path.basename(p)) for p in glob.glob(str(workdir / 'checkpoints' / '*'))
                 if os.path.basename(p).isdigit())
  assert steps[-1] == 6


@pytest.mark.slow
def test_resume_equals_uninterrupted(data_dir, tmp_path, tiny_config, final_params):
  straight = tiny_config(data_dir)
  train.train_and_evaluate(straight, str(tmp_path / 'straight'))
  first_half = tiny_config(data_dir, num_steps=3)
  train.train_and_evaluate(first_half, str(tmp_path / 'resumed'))
  assert final_params(tmp_path / 'resumed', first_half)[0] == 3
  train.train_and_evaluate(tiny_config(data_dir), str(tmp_path / 'resumed'))
  step_a, params_a = final_params(tmp_path / 'straight', straight)
  step_b, params_b = final_params(tmp_path / 'resumed', straight)
  assert step_a == step_b == 6
  for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
    np.testing.assert_array_equal(a, b)  # Bitwise: same data order, dropout and updates.


@pytest.mark.slow
def test_a_resumed_runs_results_are_the_uninterrupted_runs(
    data_dir, tmp_path, monkeypatch, tiny_config):
  # Logged every 2 steps, interrupted after step 3: the window holds step 3 when it saves.
  config = tiny_config(data_dir, num_steps=6, log_every_steps=2, eval_every_steps=3)
  config.checkpoint.every_steps = 100
  train.train_and_evaluate(config, str(tmp_path / 'straight'))
  real_reached = train.preemption.PreemptionWatch.reached

  def signal_after_step_3(watch, step):
    watch.signal = train.signal.SIGTERM if step == 3 else watch.signal
    return step == 3 or real_reached(watch, step)

  monkeypatch.setattr(train.preemption.PreemptionWatch, 'reached', signal_after_step_3)
  assert train.train_and_evaluate(config, str(tmp_path / 'resumed'))['step'] == 3
  monkeypatch.undo()
  train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  straight, resumed = (json.loads((tmp_path / run / 'results.json').read_text())
                       for run in ('straight', 'resumed'))
  assert [h['step'] for h in straight['train_history']] == [2, 4, 6]
  assert all(set(h) == {'step', 'loss', 'top1_error', 'top5_error'} and
             0 <= h['top5_error'] <= h['top1_error'] <= 1 for h in straight['train_history'])
  for results in (straight, resumed):
    results.pop('workdir')
  assert resumed == straight


@pytest.mark.slow
def test_non_finite_loss_stops_with_the_step_and_keeps_the_good_checkpoint(
    data_dir, tmp_path, tiny_config, final_params):
  config = tiny_config(data_dir, num_steps=8, eval_every_steps=100)
  train.train_and_evaluate(tiny_config(data_dir, num_steps=2), str(tmp_path))
  config.optimizer.learning_rate = 1e12  # Step 3 sends the weights far; step 4's loss is inf.
  with pytest.raises(train.NonFiniteLossError,
                     match=r'non-finite at step \d+ .*last good checkpoint is step 2.*'
                           r'--allow_config_changes'):
    train.train_and_evaluate(config, str(tmp_path), allow_config_changes=True)
  assert final_params(tmp_path, config)[0] == 2


def test_missing_data_says_what_to_download(tmp_path, tiny_config):
  config = tiny_config(str(tmp_path))
  config.data.source = 'imagenet2012'
  config.data.manual_dir = str(tmp_path / 'manual')
  with pytest.raises(FileNotFoundError, match='ILSVRC2012_img_train.tar.*alexnet_jax.data.prepare'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')  # Failed before touching the workdir.


@pytest.mark.parametrize('section,field,value,message', [
    ('mesh', 'data', 3, r'mesh.data=3 x mesh.tower=2 = 6 devices, but 8 are available'),
    ('train', 'batch_size', 18, r'train.batch_size=18 does not divide over mesh.data=4'),
    ('eval', 'batch_size', 10, r'eval.batch_size=10 does not divide over mesh.data=4'),
])
def test_mesh_and_batch_errors_come_first(
    data_dir, tmp_path, section, field, value, message, tiny_config):
  config = tiny_config(data_dir)
  setattr(getattr(config, section), field, value)
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


def test_unwritable_workdir(data_dir, tmp_path, tiny_config):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  with pytest.raises(PermissionError, match=r'Cannot write to --workdir=.*a_file/run'):
    train.train_and_evaluate(tiny_config(data_dir), str(blocker / 'run'))


@pytest.mark.parametrize('flags,message', [
    (['--config.model.lrnn=False'], '--config.model.lrnn=False: the config has no field '
                                    """'lrnn'. Did you mean "lrn" instead of "lrnn"?"""),
    (['--config.data.source=folder', '--config.data.folder=/no/such/folder'],
     "data.folder='/no/such/folder' does not exist"),
    (['--config.mesh.data=3'], 'mesh.data=3 x mesh.tower=2 = 6 devices, but 2 are available'),
])
@pytest.mark.multiprocess
def test_a_users_mistake_is_one_paragraph_not_a_traceback(tmp_path, flags, message):
  proc = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.main', '--config=configs/demo.py',
       f'--workdir={tmp_path / "run"}', f'--config.data.data_dir={tmp_path / "data"}',
       *flags], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.startswith('Error: ') and message in proc.stderr, proc.stderr
  assert 'Traceback' not in proc.stderr and len(proc.stderr.splitlines()) <= 3
  if '(The traceback is in ' in proc.stderr:  # Past the checks that need no data.
    log = proc.stderr.split('(The traceback is in ')[1].split(')')[0]
    with open(log) as f:
      assert 'Traceback' in f.read()


@pytest.mark.slow
@pytest.mark.multiprocess
def test_the_console_shows_the_run_and_the_log_file_the_rest(data_dir, tmp_path):
  workdir = tmp_path / 'run'
  fields = {'data.data_dir': data_dir, 'data.synthetic_train_size': 96,
            'data.synthetic_eval_size': 37, 'train.batch_size': 16, 'eval.batch_size': 16,
            'train.num_steps': 4, 'train.log_every_steps': 2, 'train.eval_every_steps': 2,
            'checkpoint.every_steps': 2, 'model.init': 'caffe'}
  proc = subprocess.run(
      [sys.executable, '-m', 'alexnet_jax.main', '--config=configs/demo.py',
       f'--workdir={workdir}', *(f'--config.{k}={v}' for k, v in fields.items())],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env={k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'})
  assert proc.returncode == 0, proc.stderr[-3000:]
  console = (proc.stdout + proc.stderr).splitlines()
  assert len(console) <= 16, '\n'.join(console)
  assert not [line for line in console if re.match(r'[IWE]\d{4} ', line) or '\x1b' in line]
  assert any(line.startswith(f'Writing to {workdir}: checkpoints/') for line in console)
  assert any(line.startswith('step 1/4 ') and 'compiled and ran in' in line
             for line in console)
  assert any(line.startswith('step 2/4 ') and ' img/s ETA ' in line for line in console)
  [log] = glob.glob(str(workdir / 'logs' / '*.log'))
  with open(log) as f:
    assert 'Config:' in f.read()


@pytest.mark.slow
def test_a_rerun_that_would_change_the_experiment_is_refused(
    data_dir, tmp_path, capsys, tiny_config, final_params):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(tiny_config(data_dir, num_steps=2, eval_every_steps=2), workdir)
  with open(os.path.join(workdir, 'config.json')) as f:
    saved = f.read()
  changed = tiny_config(data_dir, num_steps=4, eval_every_steps=2, batch_size=32)
  changed.model.lrn = False
  with pytest.raises(saved_config.ConfigChangedError,
                     match=r'model\.lrn: True -> False; train\.batch_size: 16 -> 32\. '
                           r'For a new experiment use another --workdir.*'
                           r'--allow_config_changes'):
    train.train_and_evaluate(changed, workdir)
  with open(os.path.join(workdir, 'config.json')) as f:
    assert f.read() == saved  # Refused before anything was written.
  assert final_params(workdir, tiny_config(data_dir))[0] == 2

  # How long, how often, on which devices: a resume may change those.
  longer = tiny_config(data_dir, num_steps=3, eval_every_steps=2, log_every_steps=2)
  longer.mesh.data, longer.mesh.tower = 8, 1
  capsys.readouterr()
  assert train.train_and_evaluate(longer, workdir)['step'] == 3
  out = capsys.readouterr().out
  assert 'Resumed from step 2' in out
  assert ('Resuming with these fields changed: mesh.data: -1 -> 8; mesh.tower: 2 -> 1; '
          'train.log_every_steps: 1 -> 2; train.num_steps: 2 -> 3') in out

  # Meant: the old config is kept beside the new one.
  changed.train.batch_size, changed.train.num_steps = 16, 4
  assert train.train_and_evaluate(changed, workdir, allow_config_changes=True)['step'] == 4
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['model']['lrn'] is False
  with open(os.path.join(workdir, 'config_until_step_3.json')) as f:
    assert json.load(f)['model']['lrn'] is True


@pytest.mark.slow
@pytest.mark.multiprocess
def test_the_workdir_alone_resumes_with_its_saved_config(data_dir, tmp_path, tiny_config):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(tiny_config(data_dir, num_steps=2, eval_every_steps=2), workdir)

  def main(*flags):
    return subprocess.run([sys.executable, '-m', 'alexnet_jax.main', f'--workdir={workdir}',
                           *flags], cwd=REPO, capture_output=True, text=True, timeout=300)

  resumed = main('--config.train.num_steps=3')
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'Resumed from step 2' in resumed.stdout and 'step 3/3' in resumed.stdout
  os.remove(os.path.join(workdir, 'config.json'))  # The checkpoints' copy serves.
  again = main('--config.train.num_steps=4')
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'Resumed from step 3' in again.stdout and 'config.json is missing' in again.stdout
  refused = main('--config.model.lrn=False')
  assert refused.returncode != 0
  assert 'model.lrn: True -> False' in refused.stderr
  nowhere = subprocess.run([sys.executable, '-m', 'alexnet_jax.main',
                            f'--workdir={tmp_path / "new"}'], cwd=REPO, capture_output=True,
                           text=True, timeout=120)
  assert nowhere.returncode == 2 and 'holds no run to resume, so --config is required' in (
      nowhere.stderr)
  (tmp_path / 'cut').mkdir()
  (tmp_path / 'cut' / 'config.json').write_text('{"model": {"lrn": tr')  # A full disk's.
  cut = subprocess.run([sys.executable, '-m', 'alexnet_jax.main', f'--workdir={tmp_path / "cut"}'],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
  assert cut.returncode == 2 and 'Traceback' not in cut.stderr, cut.stderr
  assert re.match(r'Error: \S+/cut/config\.json is unreadable \(.*\), and no checkpoint records '
                  r'the config: --workdir=\S+ holds no run to resume\.', cut.stderr), cut.stderr


@pytest.mark.slow
def test_ten_patches_only_at_the_last_evaluation(end_to_end_run):
  results = end_to_end_run.results  # Evaluations at steps 3 and 6 of 6.
  first, last = results['history']
  assert 'centre_top1_error' in first and 'ten_patch_top1_error' not in first
  assert 'ten_patch_top1_error' in last and results['final'] == last


@pytest.mark.slow
def test_a_damaged_newest_checkpoint_is_passed_over_and_the_run_resumes_before_it(
    data_dir, tmp_path, capsys, tiny_config):
  train.train_and_evaluate(tiny_config(data_dir, num_steps=4, eval_every_steps=100),
                           str(tmp_path))
  kernel = max((p for p in (tmp_path / 'checkpoints' / '4').rglob('*') if p.is_file()),
               key=lambda p: p.stat().st_size)
  data = bytearray(kernel.read_bytes())
  data[len(data) // 3] ^= 0x01  # One flipped bit.
  kernel.write_bytes(bytes(data))
  capsys.readouterr()
  results = train.train_and_evaluate(tiny_config(data_dir, num_steps=6, eval_every_steps=100),
                                     str(tmp_path))
  out = capsys.readouterr().out
  assert re.search(r'Damaged checkpoint in \S+/checkpoints \(step 4: its file \S+ no longer '
                   r'matches the checksum .*\), so step 2 is used instead\. They were moved, '
                   r'not deleted, to \S+/checkpoints_damaged', out), out
  assert 'Resumed from step 2' in out and results['step'] == 6
  assert [p.name.split('_')[0] for p in (tmp_path / 'checkpoints_damaged').iterdir()] == ['4']


def _failing_background_save(monkeypatch, at_step):
  """Orbax's background write of step `at_step` fails as on a full disk."""
  real = checkpointing.ocp.CheckpointManager.wait_until_finished

  def wait_until_finished(manager):
    real(manager)
    if manager.latest_step() == at_step:
      raise OSError(28, 'No space left on device')
  monkeypatch.setattr(checkpointing.ocp.CheckpointManager, 'wait_until_finished',
                      wait_until_finished)


@pytest.mark.slow
def test_a_failed_save_stops_the_run_at_once_and_the_rerun_resumes(
    data_dir, tmp_path, monkeypatch, tiny_config):
  config = tiny_config(data_dir, num_steps=8, eval_every_steps=100)
  config.checkpoint.async_save = True
  _failing_background_save(monkeypatch, at_step=4)
  with pytest.raises(checkpointing.CheckpointSaveError,
                     match=r'Saving the checkpoint of step 4 to \S+ failed \(No space left on '
                           r'device, errno 28; [\d.]+ GB free there now\)\. The run stopped '
                           r'there\. The last complete checkpoint is step 2\.'):
    train.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / 'results.json').exists()
  monkeypatch.undo()
  assert train.train_and_evaluate(config, str(tmp_path))['step'] == 8


@pytest.mark.slow
def test_a_failed_final_save_loses_none_of_the_results(
    data_dir, tmp_path, monkeypatch, tiny_config):
  config = tiny_config(data_dir, num_steps=4, eval_every_steps=100)
  config.checkpoint.every_steps = 100
  _failing_background_save(monkeypatch, at_step=4)
  with pytest.raises(checkpointing.CheckpointSaveError, match='step 4 .*checkpoint is none'):
    train.train_and_evaluate(config, str(tmp_path))
  saved = json.load(open(tmp_path / 'results.json'))
  assert saved['step'] == 4 and saved['final']['count'] == 37


@pytest.mark.slow
def test_a_non_finite_loss_before_any_save_says_it_starts_afresh(data_dir, tmp_path, tiny_config):
  config = tiny_config(data_dir, num_steps=8, eval_every_steps=100)
  config.checkpoint.every_steps = 100
  config.optimizer.learning_rate = 1e12
  with pytest.raises(train.NonFiniteLossError,
                     match=r'non-finite .*no checkpoint had been saved yet\. .*starts afresh'):
    train.train_and_evaluate(config, str(tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize('damage', ['missing', 'half-written'])
def test_the_experiment_check_survives_a_lost_config_json(
    data_dir, tmp_path, capsys, damage, tiny_config):
  train.train_and_evaluate(tiny_config(data_dir, num_steps=2, eval_every_steps=2),
                           str(tmp_path))
  path = tmp_path / 'config.json'
  if damage == 'missing':
    path.unlink()
  else:
    path.write_text(path.read_text()[:200])
  changed = tiny_config(data_dir, num_steps=4, eval_every_steps=2)
  changed.optimizer.learning_rate = 0.5
  with pytest.raises(saved_config.ConfigChangedError,
                     match=r'optimizer\.learning_rate: 0\.05 -> 0\.5'):
    train.train_and_evaluate(changed, str(tmp_path))
  capsys.readouterr()
  assert train.train_and_evaluate(tiny_config(data_dir, num_steps=4, eval_every_steps=2),
                                  str(tmp_path))['step'] == 4
  out = capsys.readouterr().out
  why = 'is missing' if damage == 'missing' else 'is unreadable'
  assert re.search(rf'config\.json {why}.*: checked against the config recorded in '
                   r'checkpoint step 2, and config\.json is written again\.', out), out
  assert json.load(open(path))['optimizer']['learning_rate'] == 0.05
  assert (tmp_path / 'config.json.unreadable').exists() == (damage == 'half-written')
