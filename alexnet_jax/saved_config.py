"""A run's config, saved in its workdir: checked on every rerun, and enough to resume from.

The first run in a workdir saves its resolved config as WORKDIR/config.json. A rerun (a
resume, an evaluation) compares its config with that one before it writes anything.
Fields that say how the run is carried out, not what it computes (`RESUMABLE`: its
length, logging, checkpoints, devices, data loading, evaluation) may differ. Any other
difference (the net, the data, the recipe) would mix two experiments in one workdir, so
the rerun stops and lists the differing fields, unless the user says the change is meant
(`--allow_config_changes`); the old config is then kept as
`config_until_step_<step>.json`.

`load_into` fills a config from a workdir's config.json: `python -m alexnet_jax.main
--workdir=W` without --config resumes or evaluates W with its own config
(configs/saved_run.py), and overrides apply on top as usual; `argv_with_saved_config`
does that for any command with --workdir and --config flags (the experiments too).
"""

import json
import os

import ml_collections

from alexnet_jax.runtime import errors

FILE = 'config.json'
# Fields (or whole sections, ending in '.') a rerun may change: how long, how often, on
# which devices and from where the data (and the pretrained weights a fresh run starts
# from) is read; never what is computed. A longer
# train.num_epochs / num_steps extends the run (the 'cosine' schedule then stretches).
RESUMABLE = ('host_devices', 'mesh.', 'train.num_steps', 'train.num_epochs',
             'train.log_every_steps', 'checkpoint.', 'eval.', 'data.worker_count',
             'data.worker_buffer_size', 'data.prepare_processes', 'data.data_dir',
             'data.manual_dir', 'model.pretrained')


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
  """The config saved in `workdir` as a nested dict, or None if there is none."""
  path = os.path.join(workdir, FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def differences(old: dict, new: dict) -> list[tuple[str, object, object]]:
  """(field, old value, new value) for every field that differs, sorted by field."""
  old, new = _flat(old), _flat(new)
  missing = object()
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
  'field: old -> new' lines for the console; [] for a new workdir.
  """
  old = saved(workdir)
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
  """Writes config.json; an older one that differs is kept as config_until_step_<step>."""
  path = os.path.join(workdir, FILE)
  old = saved(workdir)
  if old is not None and differences(old, _as_dict(config)):
    os.replace(path, os.path.join(workdir, f'config_until_step_{step or 0}.json'))
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  os.replace(tmp, path)


def load_into(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """`config` (the defaults) with every field saved in workdir's config.json."""
  old = saved(os.path.expanduser(workdir))
  if old is None:
    raise FileNotFoundError(
        f'{os.path.join(workdir, FILE)} does not exist: --workdir={workdir} holds no run to '
        'resume. Give --config=configs/<file>.py to start one.')
  known = _flat(_as_dict(config))
  unknown = sorted(set(_flat(old)) - set(known))
  if unknown:
    raise ValueError(f'{os.path.join(workdir, FILE)} has fields this version does not know: '
                     f'{unknown}. Give the config explicitly with --config.')
  config.update_from_flattened_dict(_flat(old))
  return config


def argv_with_saved_config(argv: list[str]) -> list[str]:
  """argv, plus --config=configs/saved_run.py:WORKDIR if it has no --config and WORKDIR
  holds a saved config."""
  workdir = None
  for i, arg in enumerate(argv):
    if arg == '--config' or arg.startswith('--config='):
      return argv
    if arg.startswith('--workdir='):
      workdir = arg.split('=', 1)[1]
    elif arg == '--workdir' and i + 1 < len(argv):
      workdir = argv[i + 1]
  if workdir is None or not os.path.exists(os.path.join(os.path.expanduser(workdir), FILE)):
    return argv
  return [argv[0], f'--config=configs/saved_run.py:{workdir}', *argv[1:]]
