"""Every mistake that would otherwise surface late, checked before any long work.

`check_config` needs neither data nor devices: every field with a fixed set of values,
every count that must be positive, the schedule's fields, and the crop against the net's
geometry (the maps the first fully connected layer sees must be at least 1x1).
`check_data` runs once the data is prepared (data/prepare.py), before the state is built:
both splits exist and the net has as many outputs as the data has classes. Each collects
all the problems it finds and raises one `ConfigError` that names, for each, the field,
its value and what to set. `data_notes` says what is allowed but costly: images upscaled
far beyond their size.
"""

import math

import ml_collections

from alexnet_jax.data import datasets, sources, statistics
from alexnet_jax.nn import lrn, model
from alexnet_jax.runtime import errors
from alexnet_jax.training import optimizer, schedules

# The config's schema: each field's allowed values or range, checked here once; the
# modules that read the fields trust them (every command starts with check_config).
_CHOICES = {
    'model.layout': model.LAYOUTS,
    'model.init': model.INITS,
    'model.remove_conv': model.REMOVABLE,
    'model.towers': model.TOWERS,
    'model.activation': tuple(model.ACTIVATIONS),
    'model.dtype': model.DTYPES,
    'model.matmul_precision': model.MATMUL_PRECISIONS,
    'model.lrn_alpha_convention': lrn.ALPHA_CONVENTIONS,
    'data.source': sources.NAMES,
    'data.mean': statistics.MEANS,
    'data.pca_stats': ('imagenet', 'dataset'),
    'optimizer.schedule': schedules.SCHEDULES,
}
_POSITIVE = ('train.batch_size', 'eval.batch_size', 'train.log_every_steps',
             'checkpoint.every_steps', 'checkpoint.keep', 'data.image_size', 'data.crop_size',
             'model.num_classes', 'model.pool_window', 'model.pool_stride')


ConfigError = errors.ConfigError


def _get(config: ml_collections.ConfigDict, field: str):
  section, name = field.split('.')
  return config[section][name]


def _raise_if(problems: list[str]) -> None:
  if problems:
    raise ConfigError('The config cannot work:\n' + '\n'.join(f'  - {p}' for p in problems))


def _field_problems(config: ml_collections.ConfigDict) -> list[str]:
  """Each field against the schema, and the facts that tie two fields together."""
  problems = []
  for field, choices in _CHOICES.items():
    if _get(config, field) not in choices:
      problems.append(f'{field}={_get(config, field)!r}: use one of {list(choices)}.')
  for field in _POSITIVE:
    if _get(config, field) < 1:
      problems.append(f'{field}={_get(config, field)}: must be at least 1.')
  if config.train.watchdog_factor <= 1 or config.train.watchdog_min_seconds <= 0:
    problems.append(f'train.watchdog_factor={config.train.watchdog_factor} and '
                    f'train.watchdog_min_seconds={config.train.watchdog_min_seconds}: the '
                    'factor must be above 1 and the floor above 0 seconds.')
  if config.train.num_steps <= 0 and config.train.num_epochs <= 0:
    problems.append(f'train.num_epochs={config.train.num_epochs} and train.num_steps='
                    f'{config.train.num_steps}: set one of them above 0.')
  if not 0.0 <= config.model.dropout_rate < 1.0:
    problems.append(f'model.dropout_rate={config.model.dropout_rate}: must be in [0, 1).')
  if config.model.init == 'he' and config.data.mean != 'torchvision':
    problems.append(
        f"model.init='he' expects inputs of unit scale, but data.mean={config.data.mean!r} "
        'feeds the net pixels on the 0..255 scale, where it diverges within a few steps: '
        "set data.mean='torchvision' (pixels divided by ImageNet's deviations, about 58), "
        "or use an initialisation made for that scale (model.init='caffe').")
  if config.model.lrn_size % 2 == 0:
    problems.append(f'model.lrn_size={config.model.lrn_size}: the window must be odd '
                    '(the paper uses 5).')
  for check in (lambda: schedules.parse_step_epochs(config.optimizer.step_epochs),
                lambda: schedules.Plateau.from_config(config)):
    try:
      check()
    except ValueError as e:
      problems.append(str(e))
  return problems


def _net_problems(config: ml_collections.ConfigDict) -> list[str]:
  """The layer plan's own objections, the learning-rate multipliers' layers, and the crop
  against the net's geometry (the maps fc6 sees must be at least 1x1)."""
  try:
    convs, dense = model.layer_plan(config.model)
  except ValueError as e:
    return [str(e)]  # The rest needs a valid layer plan.
  problems = []
  try:
    multipliers = optimizer.parse_lr_multipliers(config.optimizer.lr_multipliers)
  except ValueError as e:
    problems.append(str(e))
  else:
    layers = [layer.name for layer in convs + dense]
    unknown = sorted(set(multipliers) - set(layers))
    if unknown:
      problems.append(f'optimizer.lr_multipliers={config.optimizer.lr_multipliers!r} names '
                      f'{", ".join(unknown)}, not a layer of this net ({", ".join(layers)}).')
  d = config.data
  if d.crop_size > d.image_size:
    problems.append(f'data.crop_size={d.crop_size} is larger than data.image_size='
                    f'{d.image_size}: crops are cut from the images (§4.1).')
  smallest = model.smallest_crop(config.model)
  if d.crop_size < smallest:
    problems.append(
        f'data.crop_size={d.crop_size}: this net ({config.model.layout} layout, '
        f'{config.model.towers} tower(s)) shrinks {d.crop_size}x{d.crop_size} inputs to '
        f'nothing before its fully connected layers. Use data.crop_size >= {smallest} (and '
        'data.image_size >= the crop).')
  return problems


def config_problems(config: ml_collections.ConfigDict) -> list[str]:
  """What is wrong with `config` on its own (no data, no devices needed)."""
  problems = _field_problems(config)
  if any(p.startswith(('model.', 'data.image_size', 'data.crop_size')) for p in problems):
    return problems  # The net's geometry needs its own fields right first.
  return problems + _net_problems(config)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError listing every problem `config_problems` finds."""
  _raise_if(config_problems(config))


def check_data(config: ml_collections.ConfigDict) -> None:
  """After preparing: the splits exist and the net fits the data's classes."""
  info = sources.dataset_info(config)
  problems = []
  for field in ('train_split', 'eval_split'):
    try:
      datasets.split_info(info, config.data[field], sources.dataset_dir(config))
    except datasets.SplitError:
      problems.append(f'data.{field}={config.data[field]!r} is not a split of the data '
                      f'({sources.dataset_dir(config)} has {sorted(info.splits)}): set '
                      f'--config.data.{field}=<one of them, or a slice such as '
                      "'train[:80%]'>.")
  classes = info.features['label'].num_classes
  if config.model.num_classes != classes:
    names = info.features['label'].names
    shown = ', '.join(names[:5]) + (', ...' if classes > 5 else '')
    problems.append(f'model.num_classes={config.model.num_classes}, but the data has '
                    f'{classes} classes ({shown}): set --config.model.num_classes={classes}.')
  _raise_if(problems)


def data_notes(config: ml_collections.ConfigDict) -> list[str]:
  """Advice, not errors: the training images are much smaller than data.image_size."""
  sides = sources.dataset_info(config).metadata.get('source_shorter_side', {})
  median = sides.get(config.data.train_split, {}).get('median', 0)
  size = config.data.image_size
  if not median or median * 1.5 > size:
    return []
  # §4.1's proportions: 224 crops of 256 images.
  crop = max(model.smallest_crop(config.model), int(median * 224 / 256))
  image = max(median, math.ceil(crop * 256 / 224))
  return [f'Note: the training images are small (shorter side {median} px, the median), and '
          f'data.image_size={size} upscales them {size / median:.1f}x: no more detail, '
          f'{(size / median) ** 2:.0f}x the pixels to store, decode and train on. This net '
          f'takes crops of {model.smallest_crop(config.model)} px and up; the nearest fit: '
          f'--config.data.image_size={image} --config.data.crop_size={crop}.']
