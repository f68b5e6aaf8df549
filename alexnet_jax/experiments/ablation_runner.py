"""Command: the ablation study, run by run: the baseline over several seeds, then the
named variants of configs/ilsvrc2012.py, then the report (ablation_report.py).

  python -m alexnet_jax.experiments.ablation_runner --out=runs/ablation \
      --variants=no_lrn,no_overlap,one_tower,no_dropout --seeds=3 --variant_seeds=3 \
      [--image_size=N --crop_size=N --epochs=N --batch_size=N] [--config.FIELD=VALUE ...] \
      [--dry_run]

On Imagenette, with the README's folder overrides, on a CPU (one forced CPU device per
tower), evaluating only at the end (a ten-patch pass over its 3,925 photos is slow on a
CPU):

  mkdir -p ~/data/imagenette
  tar -xzf imagenette2-320.tgz -C ~/data/imagenette --strip-components=1  # fast.ai's release
  python -m alexnet_jax.experiments.ablation_runner --out=runs/ablation_imagenette \
      --image_size=128 --crop_size=112 --epochs=8 --batch_size=32 \
      --config.host_devices=2 --config.data.source=folder \
      --config.data.folder=~/data/imagenette --config.data.data_dir=~/data/imagenette_data \
      --config.data.eval_split=val --config.model.num_classes=10 --config.model.init=caffe \
      --config.eval.batch_size=100 --config.optimizer.learning_rate=0.01 \
      --config.optimizer.schedule=steps --config.optimizer.step_epochs=6 \
      --config.train.eval_every_steps=100000 --config.checkpoint.every_steps=300 \
      --config.train.log_every_steps=50 --config.data.worker_count=1

Each run prints its own ETA, and the runner the time it estimates for the runs left, from
the runs it has finished (their times, summed over resumptions, in OUT/run_seconds.json);
docs/results.md, "Ablations", says what the published study took.

It first prepares the data once (`python -m alexnet_jax.data.prepare`, a no-op when
done), then runs, one after another, each in its own workdir OUT/<name>_seed<k>:

  python -m alexnet_jax.main --config=configs/ilsvrc2012.py[:VARIANT] --workdir=... \
      [scale knobs] [--config.* overrides] --config.seed=k --config.data.shuffle_seed=k

The baseline runs seeds 0..--seeds-1, each variant seeds 0..--variant_seeds-1 (3 and 3
by default: the report's interval for a variant's change needs at least 2 of each).
Every run gets the same overrides; the scale knobs are short for
--config.data.image_size, data.crop_size, train.num_epochs and train.batch_size.
`--dry_run` prints the commands and runs nothing.

Rerun the same command after a kill, a Ctrl-C or a failure: finished runs (results.json
with the training complete) are skipped and the interrupted one resumes from its last
checkpoint (main.py resumes a workdir). With `--keep=DIR`, each finished run's
config.json and results.json (all the report reads) are also copied to DIR, and a study
started in a new --out (another machine, a fresh checkout) restores them from DIR first
and runs only the rest; the runs must have the same config, but for the data's folders
(the kept config.json files record them as placeholders). Ctrl-C
reaches the run too: it saves its step and the study stops; SIGTERM (a scheduler's
preemption) is passed on to it for the same (a run that gets it from the scheduler too
counts the two as one notice: runtime/preemption.py).

Before anything runs, every run's config is built here exactly as main.py will build it,
and checked: the fields (preflight.py), that no override undoes its variant (one_tower's
mesh.tower=1, say), the mesh on `host_devices` forced CPU devices (a CPU machine needs
--config.host_devices=2: one device per tower for the baseline; one_tower then splits
the batch over both), and that a workdir of an earlier, different study is not reused.
A variant whose maps change size at the study's crop (no_overlap at 112 px, say) is
named in a note: the paper's comparison keeps the sizes (ablation_report.map_sizes).
"""

import dataclasses
import functools
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import ml_collections
from absl import flags
from ml_collections import config_flags

from alexnet_jax.configs import ilsvrc2012
from alexnet_jax.experiments import ablation_report
from alexnet_jax.run import saved_config
from alexnet_jax.runtime import chrono, command_line, errors
from alexnet_jax.training import preflight, sharding

CONFIG = 'configs/ilsvrc2012.py'
DEFAULT_VARIANTS = ('no_lrn', 'no_overlap', 'one_tower', 'no_dropout')
# Knob flag -> the config field it sets.
KNOBS = {'image_size': 'data.image_size', 'crop_size': 'data.crop_size',
         'epochs': 'train.num_epochs', 'batch_size': 'train.batch_size'}


class StudyError(errors.UserError, ValueError):
  """The study cannot run as asked; the message says which flag or run, and what to do."""


@dataclasses.dataclass(frozen=True)
class PlannedRun:
  name: str  # 'baseline' or the variant's name.
  seed: int
  workdir: str
  overrides: list[str]  # Its --config.F=V flags: the study's, then its seeds.
  argv: list[str]  # The command that trains it.
  config: ml_collections.ConfigDict  # What main.py will build from argv.

  @property
  def title(self) -> str:
    return f'{self.name} seed {self.seed}'


def override_fields(overrides: list[str]) -> dict[str, str]:
  """'--config.a.b=v' strings -> {'a.b': 'v'}; refuses any other form."""
  fields = {}
  for override in overrides:
    name, equals, value = override.partition('=')
    if not name.startswith('--config.') or not equals:
      raise StudyError(f'{override}: give config overrides as --config.FIELD=VALUE (one '
                       'argument each).')
    fields[name[len('--config.'):]] = value
  return fields


def _build(config_arg: str, overrides: list[str]) -> ml_collections.ConfigDict:
  """The config main.py builds from --config=config_arg and the overrides."""
  argv = ['main', f'--config={command_line.config_path(config_arg)}', *overrides]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'Config file.', flag_values=values,
                                  sys_argv=argv)
  try:
    values(argv)
  except (flags.Error, AttributeError) as e:
    raise StudyError(command_line.flag_error(e, argv)) from e
  return values.config


def plan(out: str, variants: list[str], seeds: int, variant_seeds: int,
         knobs: dict[str, object], overrides: list[str]) -> list[PlannedRun]:
  """The study's runs, in order: the baseline's seeds, then each variant's.

  knobs: KNOBS' flag names -> value (None: not given). overrides: '--config.F=V' strings.
  """
  unknown = [v for v in variants if v not in ilsvrc2012.VARIANTS]
  if unknown:
    raise StudyError(f'--variants: unknown {unknown}; the variants of {CONFIG} are '
                     f'{", ".join(ilsvrc2012.VARIANTS)}.')
  if seeds < 1 or variant_seeds < 1:
    raise StudyError(f'--seeds={seeds} and --variant_seeds={variant_seeds}: each must be at '
                     'least 1 (2 or more of each give the report an interval for each change).')
  given = override_fields(overrides)
  seed_fields = ablation_report.SEED_FIELDS
  for field in seed_fields:
    if field in given:
      raise StudyError(f'--config.{field}: the runner sets {" and ".join(seed_fields)} per '
                       'run (seeds 0..N-1); choose how many with --seeds and --variant_seeds.')
  shared = []
  for knob, field in KNOBS.items():
    if knobs.get(knob) is None:
      continue
    if field in given:
      raise StudyError(f'--{knob}={knobs[knob]} and --config.{field}={given[field]} set the '
                       'same field: give one of them.')
    shared.append(f'--config.{field}={knobs[knob]}')
  shared += overrides
  out = os.path.abspath(os.path.expanduser(out))
  runs = []
  for name, count in [('baseline', seeds), *((v, variant_seeds) for v in variants)]:
    config_arg = CONFIG if name == 'baseline' else f'{CONFIG}:{name}'
    for seed in range(count):
      workdir = os.path.join(out, f'{name}_seed{seed}')
      own = [*shared, *(f'--config.{field}={seed}' for field in seed_fields)]
      argv = [sys.executable, '-m', 'alexnet_jax.main', f'--config={config_arg}',
              f'--workdir={workdir}', *own]
      runs.append(PlannedRun(name, seed, workdir, own, argv, _build(config_arg, own)))
  return runs


def prepare_command(runs: list[PlannedRun]) -> list[str]:
  """Prepares the data all runs read (the variants change no field of the data)."""
  return [sys.executable, '-m', 'alexnet_jax.data.prepare', f'--config={CONFIG}',
          *runs[0].overrides]


def _check_variant_kept(run: PlannedRun) -> None:
  """The overrides must not undo what the run's variant changes."""
  if run.name == 'baseline':
    return
  for path, value in ilsvrc2012.VARIANTS[run.name][1].items():
    section, field = path.split('.')
    if run.config[section][field] != value:
      raise StudyError(
          f'The overrides set {path}={run.config[section][field]!r}, undoing the variant '
          f'{run.name} ({ilsvrc2012.VARIANTS[run.name][0]}), which sets it to {value!r}. '
          f'Leave that override out, or leave {run.name} out of --variants.')


def _check_mesh(run: PlannedRun) -> None:
  """On forced CPU devices the device count is known here: the mesh and batches must fit."""
  devices = run.config.host_devices
  if devices <= 0:
    return  # The real devices: each run checks its mesh at start-up, before any work.
  data, tower = sharding.mesh_shape(run.config, devices)
  for field in ('train.batch_size', 'eval.batch_size'):
    section, name = field.split('.')
    if run.config[section][name] % data:
      raise StudyError(f'{field}={run.config[section][name]} does not divide over '
                       f'mesh.data={data} (host_devices={devices} / mesh.tower={tower}): use '
                       f'a multiple of {data}.')


def check(runs: list[PlannedRun]) -> None:
  """Every check that needs no data and no devices, for every run, before the first."""
  for run in runs:
    try:
      preflight.check_config(run.config)
      _check_variant_kept(run)
      _check_mesh(run)
      saved_config.check_rerun(run.config, run.workdir)
    except saved_config.ConfigChangedError as e:
      raise StudyError(f'{run.title}: {e} For the runner: give another --out for a study '
                       'with other overrides or at another scale.') from e
    except errors.UserError as e:
      raise StudyError(f'{run.title}: {e}') from e


def map_notes(runs: list[PlannedRun]) -> list[str]:
  """For each variant whose maps have other sizes than the baseline's at the study's crop,
  what the report will say of it (ablation_report.map_sizes)."""
  baseline = next(run.config for run in runs if run.name == 'baseline')
  notes = {}
  for run in runs:
    if run.name != 'baseline' and run.name not in notes:
      notes[run.name] = ablation_report.map_sizes(baseline.model, run.config.model, run.name,
                                                  baseline.data.crop_size)
  return [note for note in notes.values() if note]


def unfinished(run: PlannedRun) -> str | None:
  """Why the run has not yet trained as long as its config asks; None when it has."""
  config = json.loads(run.config.to_json_best_effort())
  return ablation_report.unfinished(ablation_report.read_results(run.workdir), config)


# Fields that name this machine's folders: a kept config.json records them as
# '<data.folder>' and so on, and restoring puts back the new study's own values, so the
# kept runs name no machine's paths and carry over to any machine with the same data.
MACHINE_FIELDS = ('data.folder', 'data.data_dir', 'data.manual_dir')


def _machine_fields(config: dict, values: dict[str, str]) -> dict:
  """`config` (a config.json's dict) with each of MACHINE_FIELDS set from `values`."""
  config = json.loads(json.dumps(config))
  for field in MACHINE_FIELDS:
    section, name = field.split('.')
    config[section][name] = values[field]
  return config


def _write_json(tree: dict, path: str) -> None:
  """Written whole or not at all: a kill mid-write leaves the file as it was."""
  with open(path + '.partial', 'w') as f:
    json.dump(tree, f, indent=2)
  os.replace(path + '.partial', path)


def restore_kept(runs: list[PlannedRun], kept: str) -> list[str]:
  """Copies into each unfinished run's workdir the config.json (with this study's
  MACHINE_FIELDS) and results.json that `kept` holds for it (`keep`); returns the titles of
  the runs restored so."""
  restored = []
  for run in runs:
    source = os.path.join(kept, os.path.basename(run.workdir))
    if unfinished(run) and os.path.exists(os.path.join(source, ablation_report.RESULTS)):
      os.makedirs(run.workdir, exist_ok=True)
      with open(os.path.join(source, saved_config.FILE)) as f:
        config = json.load(f)
      values = {field: run.config[field] for field in MACHINE_FIELDS}
      _write_json(_machine_fields(config, values), os.path.join(run.workdir, saved_config.FILE))
      shutil.copy2(os.path.join(source, ablation_report.RESULTS),
                   os.path.join(run.workdir, ablation_report.RESULTS))
      restored.append(run.title)
  return restored


def keep(run: PlannedRun, kept: str) -> None:
  """Copies a finished run's config.json and results.json (a few KB) to `kept`; the
  config's MACHINE_FIELDS become placeholders and the results name the run's workdir by
  its name, not by this machine's path."""
  name = os.path.basename(run.workdir)
  target = os.path.join(kept, name)
  os.makedirs(target, exist_ok=True)
  with open(os.path.join(run.workdir, saved_config.FILE)) as f:
    config = json.load(f)
  _write_json(_machine_fields(config, {field: f'<{field}>' for field in MACHINE_FIELDS}),
              os.path.join(target, saved_config.FILE))
  results = {**ablation_report.read_results(run.workdir), 'workdir': name}
  _write_json(results, os.path.join(target, ablation_report.RESULTS))


def _run(argv: list[str]) -> int:
  """Runs a command to its end; its exit status. A Ctrl-C reaches it too (one process
  group): it saves and exits, and is waited for. A SIGTERM is passed on to it."""
  process = subprocess.Popen(argv)
  previous = signal.signal(signal.SIGTERM, lambda *_: process.send_signal(signal.SIGTERM))
  try:
    try:
      return process.wait()
    except KeyboardInterrupt:
      return process.wait()
  finally:
    signal.signal(signal.SIGTERM, previous)


# OUT/run_seconds.json: each run's seconds of training so far (its commands' wall time,
# summed over the sessions that resumed it), so that a study resumed in a new process
# still estimates the time left.
SECONDS = 'run_seconds.json'


def _read_seconds(out: str) -> dict[str, float]:
  try:
    with open(os.path.join(out, SECONDS)) as f:
      return json.load(f)
  except (OSError, ValueError):  # None yet, or unreadable: only the estimate waits.
    return {}


def _estimate(runs: list[PlannedRun], left: list[PlannedRun], spent: dict[str, float]) -> str:
  """' (about ... left for N runs, ...)' from the mean time of the finished runs whose time
  was recorded, less what the runs left have already had; '' before any."""
  finished = [spent[name] for name in (os.path.basename(r.workdir) for r in runs
                                       if r not in left) if name in spent]
  if not finished:
    return ''
  mean = sum(finished) / len(finished)
  seconds = sum(max(mean - spent.get(os.path.basename(r.workdir), 0.0), 0.0) for r in left)
  return (f' (about {chrono.format_duration(seconds)} left for {len(left)} '
          f'run{"s" * (len(left) > 1)}, at the mean time of the {len(finished)} finished '
          f'run{"s" * (len(finished) > 1)} timed)')


def run_study(runs: list[PlannedRun], out: str, dry_run: bool = False,
              kept: str | None = None) -> int:
  """Prepares the data, runs what has not finished, then writes the report; the exit
  status (non-zero: a run stopped, and the study with it). With `kept`, each run that
  finishes is also copied there (`keep`)."""
  todo = [run for run in runs if unfinished(run)]
  commands = [prepare_command(runs), *(run.argv for run in todo)]
  if dry_run:
    for run in runs:
      if run not in todo:
        print(f'# {run.title}: finished ({run.workdir}), skipped')
    print('\n'.join(shlex.join(argv) for argv in commands))
    print(f'# then the report: {os.path.join(out, ablation_report.REPORT)}')
    return 0
  print(f'Preparing the data (a no-op when done): {shlex.join(commands[0])}', flush=True)
  code = _run(commands[0])
  if code:
    print(f'Stopped: preparing the data exited with status {code}.', flush=True)
    return code
  print(f'{len(runs) - len(todo)} of {len(runs)} runs finished before; {len(todo)} to run.',
        flush=True)
  spent = _read_seconds(out)
  for i, run in enumerate(runs, 1):
    if run not in todo:
      print(f'[{i}/{len(runs)}] {run.title}: finished ({run.workdir}), skipped', flush=True)
      continue
    print(f'[{i}/{len(runs)}] {run.title}{_estimate(runs, todo[todo.index(run):], spent)}: '
          f'{shlex.join(run.argv)}', flush=True)
    started = time.time()
    code = _run(run.argv)
    name = os.path.basename(run.workdir)
    spent[name] = spent.get(name, 0.0) + time.time() - started
    _write_json(spent, os.path.join(out, SECONDS))
    reason = unfinished(run)
    if not reason and kept:
      keep(run, kept)
    if reason:
      print(f'Stopped: {run.title} exited with status {code} and has not finished: {reason} '
            f'(its log: {os.path.join(run.workdir, "logs")}). Rerun this command to go on: '
            'finished runs are skipped, this one resumes from its last checkpoint.',
            flush=True)
      return code or 1
  text, report, chart = ablation_report.write_report(
      [r.workdir for r in runs if r.name == 'baseline'],
      [r.workdir for r in runs if r.name != 'baseline'], out)
  print(text + f'\nWrote {report} and {chart}', flush=True)
  return 0


def main(argv, overrides: list[str]):
  if len(argv) > 1:
    raise StudyError(f'Unexpected arguments: {argv[1:]}. Config overrides take the form '
                     '--config.FIELD=VALUE, one argument each.')
  f = flags.FLAGS
  runs = plan(f.out, f.variants, f.seeds, f.variant_seeds,
              {knob: f[knob].value for knob in KNOBS}, overrides)
  kept = os.path.abspath(os.path.expanduser(f.keep)) if f.keep else None
  if kept and not f.dry_run:
    for title in restore_kept(runs, kept):
      print(f'{title}: finished earlier, restored from {kept}', flush=True)
  check(runs)  # Restored runs too: a kept run of another study is refused.
  for note in map_notes(runs):
    print(f'Note: {note}', flush=True)
  return run_study(runs, os.path.abspath(os.path.expanduser(f.out)), f.dry_run, kept)


if __name__ == '__main__':
  flags.DEFINE_string('out', None, 'The study\'s directory: a workdir per run, and the '
                      'report.', required=True)
  flags.DEFINE_list('variants', list(DEFAULT_VARIANTS), f'Variants of {CONFIG} to run: '
                    f'any of {", ".join(ilsvrc2012.VARIANTS)}.')
  flags.DEFINE_integer('seeds', 3, 'Baseline runs, seeds 0..N-1.')
  flags.DEFINE_integer('variant_seeds', 3, 'Runs of each variant, seeds 0..N-1 (an interval '
                       'for its change needs 2 or more).')
  flags.DEFINE_integer('image_size', None, 'data.image_size of every run.')
  flags.DEFINE_integer('crop_size', None, 'data.crop_size of every run.')
  flags.DEFINE_float('epochs', None, 'train.num_epochs of every run.')
  flags.DEFINE_integer('batch_size', None, 'train.batch_size of every run.')
  flags.DEFINE_bool('dry_run', False, 'Print the commands; run nothing.')
  flags.DEFINE_string('keep', None, 'A folder (e.g. in the repository) where each finished '
                      "run's config.json and results.json are copied, and from which they "
                      'are restored into a new --out: a study spread over several machines '
                      'or sessions goes on from the runs already done.')
  # --config.* are the runs' overrides, not this command's flags.
  passed = [a for a in sys.argv[1:] if a.startswith('--config.')]
  command_line.run(functools.partial(main, overrides=passed),
                   [a for a in sys.argv if not a.startswith('--config.')])
