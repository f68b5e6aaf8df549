"""A run's config, saved in its workdir: checked on every rerun, and enough to resume from.

The first run in a workdir saves its resolved config as WORKDIR/config.json. A rerun (a
resume, an evaluation) compares its config with that one before it writes anything.
Fields that say how the run is carried out, not what it computes (`RESUMABLE`: its
length, logging, checkpoints, devices, data loading, evaluation) may differ. Any other
difference (the net, the data, the recipe) would mix two experiments in one workdir, so
the rerun stops and lists the differing fields, unless the user says the change is meant
(`--allow_config_changes`); the old config is then kept as
`config_until_step_<step>.json`.

Every checkpoint also records the config it was saved under (training/train.py), so the check
never lapses: when config.json is missing or unreadable (deleted, cut short by a full
disk), a rerun is checked against the newest checkpoint's copy, says so, and writes
config.json again (an unreadable one is kept as config.json.unreadable). Only
checkpoints that record no config (saved by an older version) leave nothing to check
against: the rerun is then refused unless --allow_config_changes.

`load_into` fills a config from a workdir's saved config: `python -m alexnet_jax.main
--workdir=W` without --config resumes or evaluates W with its own config
(configs/saved_run.py), and overrides apply on top as usual; `argv_with_saved_config`
does that for any command with --workdir and --config flags (the experiments too).
"""

import json
import os

import ml_collections

from alexnet_jax.run import workdir as workdirs
from alexnet_jax.runtime import errors

FILE = 'config.json'
# Fields (or whole sections, ending in '.') a rerun may change: how long, how often, on
# which devices and from where the data (and the pretrained weights a fresh run starts
# from) is read; never what is computed. A longer
# train.num_epochs / num_steps extends the run (the 'cosine' schedule then stretches).
RESUMABLE = ('host_devices', 'mesh.', 'train.num_steps', 'train.num_epochs',
             'train.log_every_steps', 'train.watchdog_factor', 'train.watchdog_min_seconds',
             'checkpoint.', 'eval.', 'data.worker_count', 'data.worker_buffer_size',
             'data.prepare_processes', 'data.allow_partial', 'data.data_dir',
             'data.manual_dir', 'model.pretrained', 'model.pretrained_layers')


# Fields added after runs had been saved without them, each with the value that computes
# what those runs computed: a saved config that lacks one is read as having that value.
ADDED_FIELDS = {'model.matmul_precision': 'default', 'data.allow_partial': False}


class ConfigChangedError(errors.UserError, ValueError):
  """A rerun's config differs from the workdir's in fields that change the experiment."""


def _flat(tree: dict, prefix: str = '') -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flat(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def _as_dict(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json_best_effort())


def saved(workdir: str) -> dict | None:
  """The config saved in `workdir` as a nested dict, or None if there is none.

  Raises ConfigChangedError (naming the file) if config.json cannot be read.
  """
  path = os.path.join(workdir, FILE)
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    raise ConfigChangedError(
        f'{path} is unreadable ({e}); it records the experiment of --workdir={workdir}. '
        'Rerun the same command: a run reads the copy its checkpoints hold instead.') from e


def recorded(workdir: str) -> tuple[int, dict] | None:
  """(step, config) of the newest intact checkpoint in workdir that records its config."""
  directory = workdirs.Workdir(workdir).checkpoints
  if not os.path.isdir(directory):
    return None
  ckpt = workdirs.Workdir(workdir).checkpointer(read_only=True)
  try:
    found = ckpt.recorded_meta()
    steps = ckpt.all_steps()
  finally:
    ckpt.close()
  if found is None or 'config' not in found[1]:
    if steps:
      raise ConfigChangedError(
          f'{os.path.join(workdir, FILE)} is missing or unreadable, and the checkpoints in '
          f'{directory} (steps {steps}) do not record their config (saved by an older '
          'version), so nothing tells which experiment they belong to. If this run is the '
          'same experiment, rerun with --allow_config_changes (its config is then saved); '
          'else use another --workdir.')
    return None
  return found[0], found[1]['config']


def reference(workdir: str) -> tuple[dict | None, str | None]:
  """(the config a rerun in workdir is checked against, a note when it is not
  config.json's); (None, None) for a workdir without a run."""
  path = os.path.join(workdir, FILE)
  try:
    old, unreadable = saved(workdir), None
  except ConfigChangedError as e:
    old, unreadable = None, f'{path} is unreadable ({e.__cause__})'
  if old is not None:
    return old, None
  found = recorded(workdir)
  missing = unreadable or f'{path} is missing'
  if found is None:
    return None, (f'{missing}; the run there saved no checkpoint, so this one starts afresh.'
                  if unreadable else None)
  return found[1], (f'{missing}: checked against the config recorded in checkpoint step '
                    f'{found[0]}, and config.json is written again.')


class _Unset:
  """A field one of two configs lacks (a config saved by an older version)."""

  def __repr__(self) -> str:
    return '(unset)'


def differences(old: dict, new: dict) -> list[tuple[str, object, object]]:
  """(field, old value, new value) for every field that differs, sorted by field; a field
  of ADDED_FIELDS missing on one side counts as its value there."""
  old, new = {**ADDED_FIELDS, **_flat(old)}, {**ADDED_FIELDS, **_flat(new)}
  missing = _Unset()
  return [(name, old.get(name, missing), new.get(name, missing))
          for name in sorted(old.keys() | new.keys())
          if old.get(name, missing) != new.get(name, missing)]


def _matches(name: str, fields: tuple[str, ...]) -> bool:
  return any(name == f or (f.endswith('.') and name.startswith(f)) for f in fields)


def check_rerun(config: ml_collections.ConfigDict, workdir: str,
                allow_changes: bool = False, also: tuple[str, ...] = ()) -> list[str]:
  """Raises ConfigChangedError if `config` would change the experiment saved in workdir.

  `also`: fields that may change besides RESUMABLE (an evaluation may read another
  split). Returns the changed fields (resumable ones, or all when `allow_changes`), as
  'field: old -> new' lines for the console; [] for a new workdir. The saved config is
  `reference`'s.
  """
  try:
    old, _ = reference(workdir)  # Its note is the caller's to print.
  except ConfigChangedError:
    if allow_changes:
      return []
    raise
  if old is None:
    return []
  changed = differences(old, _as_dict(config))
  lines = [f'{name}: {a!r} -> {b!r}' for name, a, b in changed]
  wrong = [line for (name, _, _), line in zip(changed, lines)
           if not _matches(name, RESUMABLE + also)]
  if wrong and not allow_changes:
    raise ConfigChangedError(
        f'--workdir={workdir} holds a run with another config ({os.path.join(workdir, FILE)}'
        f'); rerunning resumes that run, and these fields would change it: '
        f'{"; ".join(wrong)}. For a new experiment use another --workdir. To resume as it '
        'was, drop those overrides (or leave out --config: the saved config is used). If '
        'the change is meant, rerun with --allow_config_changes.')
  return lines


def save(config: ml_collections.ConfigDict, workdir: str, step: int | None) -> None:
  """Writes config.json atomically; an older one that differs is kept as
  config_until_step_<step>.json, an unreadable one as config.json.unreadable."""
  path = os.path.join(workdir, FILE)
  try:
    old = saved(workdir)
  except ConfigChangedError:
    os.replace(path, path + '.unreadable')
    old = None
  if old is not None and differences(old, _as_dict(config)):
    os.replace(path, os.path.join(workdir, f'config_until_step_{step or 0}.json'))
  tmp = f'{path}.{os.getpid()}.tmp'
  with open(tmp, 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def load_into(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """`config` (the defaults) with every field of the config saved in workdir."""
  workdir = os.path.expanduser(workdir)
  old, _ = reference(workdir)
  if old is None:
    why = f'{os.path.join(workdir, FILE)} does not exist'
    try:
      saved(workdir)
    except ConfigChangedError as e:  # There, but unreadable.
      why = f'{os.path.join(workdir, FILE)} is unreadable ({e.__cause__}), and no checkpoint ' \
            'records the config'
    raise FileNotFoundError(f'{why}: --workdir={workdir} holds no run to resume. Give '
                            '--config=configs/<file>.py to start one.')
  known = _flat(_as_dict(config))
  unknown = sorted(set(_flat(old)) - set(known))
  if unknown:
    raise ValueError(f'The config saved in {workdir} has fields this version does not know: '
                     f'{unknown}. Give the config explicitly with --config.')
  config.update_from_flattened_dict(_flat(old))
  return config


def holds_run(workdir: str) -> bool:
  """Whether workdir has a config.json or a checkpoint directory with a step in it."""
  directory = workdirs.Workdir(workdir).checkpoints
  return os.path.exists(os.path.join(workdir, FILE)) or (
      os.path.isdir(directory) and any(n.isdigit() for n in os.listdir(directory)))


def argv_with_saved_config(argv: list[str]) -> list[str]:
  """argv, plus --config=configs/saved_run.py:WORKDIR if it has no --config and WORKDIR
  holds a run (`holds_run`)."""
  workdir = None
  for i, arg in enumerate(argv):
    if arg == '--config' or arg.startswith('--config='):
      return argv
    if arg.startswith('--workdir='):
      workdir = arg.split('=', 1)[1]
    elif arg == '--workdir' and i + 1 < len(argv):
      workdir = argv[i + 1]
  if workdir is None or not holds_run(os.path.expanduser(workdir)):
    return argv
  return [argv[0], f'--config=configs/saved_run.py:{workdir}', *argv[1:]]
