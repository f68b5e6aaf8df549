"""Command line: what a trained (or pretrained) net sees in your images.

  python -m alexnet_jax.predict --workdir=runs/dogs_vs_cats photo.jpg more_photos/
  python -m alexnet_jax.predict --config=configs/torchvision_alexnet.py \
      --config.model.pretrained=alexnet-owt-7be5be79.pth photo.jpg --json=out.json

prints, for each image (folders are searched for image files), its top-5 classes with
their names and probabilities. The net is the workdir's latest checkpoint (or
`--config.eval.checkpoint_step`), or, with no checkpoint there, the complete pretrained
net of `model.pretrained`. Images are prepared as the data was (§2: shorter side to
data.image_size, central square) and the net sees the centre crop, or with --ten_patch
the average of the paper's ten patches (§4.1). Class names come from the prepared
dataset (folder names; ImageNet's wnids are given their names), else from the list
tensorflow-datasets ships for ILSVRC-2012 when the net has 1000 classes. Unreadable
images are reported by name and skipped.
"""

import json
import os
import sys

from absl import flags, logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from ml_collections import config_flags
import tensorflow_datasets as tfds
# The English names of ILSVRC-2012's classes, in the order of TFDS's imagenet2012 labels.
from tensorflow_datasets.datasets.siscore import labels as imagenet_labels

from alexnet_jax.data import augment, decode, sources, statistics
from alexnet_jax.nn import model
from alexnet_jax.run import saved_config, workdir as workdirs
from alexnet_jax.runtime import command_line, errors
from alexnet_jax.training import preflight, saved_nets, sharding

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py[:arg]); default: '
                                "the workdir's saved config.", lock_config=True)
flags.DEFINE_string('workdir', None, 'A run whose checkpoint predicts (with no checkpoint '
                    'there, --config.model.pretrained must hold a complete net).')
flags.DEFINE_string('json', None, 'Also write the predictions to this JSON file.')
flags.DEFINE_bool('ten_patch', False, 'Average the ten patches of §4.1 (corners, centre, '
                  'and their reflections) instead of the centre patch alone.')
flags.DEFINE_integer('top', 5, 'Classes shown per image.')

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif', '.tiff')
_BATCH = 16


def image_paths(arguments: list[str]) -> list[str]:
  """The image files named, and those under the folders named (sorted), in order."""
  paths = []
  for argument in arguments:
    if os.path.isdir(argument):
      found = [os.path.join(root, name) for root, _, names in os.walk(argument)
               for name in names if name.lower().endswith(IMAGE_EXTENSIONS)]
      if not found:
        raise errors.UserError(f'Folder {argument} holds no image files '
                               f'({", ".join(IMAGE_EXTENSIONS)}).')
      paths += sorted(found)
    elif os.path.exists(argument):
      paths.append(argument)
    else:
      raise errors.UserError(f'{argument}: no such image file or folder.')
  return paths


def _imagenet_names() -> dict[str, str]:
  """ILSVRC-2012 wnid -> its first English name, from the lists tensorflow-datasets ships."""
  path = os.path.join(os.path.dirname(tfds.__file__), 'datasets', 'imagenet2012', 'labels.txt')
  with open(path) as f:
    wnids = f.read().split()
  names = imagenet_labels.IMAGENET_LABELS_LIST
  return {wnid: name.split(',')[0] for wnid, name in zip(wnids, names)}


def class_names(config: ml_collections.ConfigDict) -> list[str]:
  """A name for each of the net's classes (see the module docstring)."""
  count = config.model.num_classes
  names = None
  if sources.is_prepared(config):
    names = list(sources.dataset_info(config).features['label'].names)
  else:
    names = sources.get(config).class_names()
  if names is None or len(names) != count:
    return [f'class {i}' for i in range(count)]
  imagenet = _imagenet_names()
  return [f'{imagenet[n]} ({n})' if n in imagenet else n for n in names]


def _load_image(path: str, size: int) -> np.ndarray:
  with open(path, 'rb') as f:
    return decode.decode_to_square(f.read(), size)


def make_predictor(config: ml_collections.ConfigDict, net, ten_patch: bool):
  """A jitted (params, uint8 images (b, size, size, 3), stats) -> class probabilities."""
  crop = config.data.crop_size

  def probabilities(params, images, stats):
    if ten_patch:
      patches = augment.ten_patches(images, stats, crop)  # (10, b, c, c, 3)
      logits = net.apply({'params': params}, patches.reshape(-1, crop, crop, 3), train=False)
      return jax.nn.softmax(logits).reshape(10, images.shape[0], -1).mean(axis=0)
    logits = net.apply({'params': params}, augment.center_patch(images, stats, crop),
                       train=False)
    return jax.nn.softmax(logits)

  return jax.jit(probabilities)


def predict(config: ml_collections.ConfigDict, workdir: str | None, paths: list[str], *,
            ten_patch: bool = False, top: int = 5,
            say=print) -> tuple[list[dict], list[str]]:
  """Top-`top` classes of each readable image in `paths`.

  Returns ([{'image': path, 'top5': [{'index', 'name', 'probability'}, ...]}, ...],
  ['path: why it was skipped', ...]).
  """
  preflight.check_config(config)
  config = ml_collections.ConfigDict(config)
  config.mesh.tower, config.mesh.data = 1, 1  # A few images: one device holds the net.
  mesh = sharding.make_mesh(config, jax.local_devices()[:1])
  net = model.create_model(config, mesh)
  trained = workdir and workdirs.Workdir(workdir).has_checkpoint()
  if not trained and not config.model.pretrained:
    raise errors.UserError(
        (f'--workdir={workdir} has no checkpoint' if workdir else 'No --workdir given')
        + '; name a trained run with --workdir, or weights with --config.model.pretrained.')
  saved = saved_nets.nets_to_evaluate(config, workdir, net, mesh, [])
  names = class_names(config)
  stats = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), statistics.load_stats(config))
  (params,), (source,) = saved()
  say(f'Predicting with {source}.')
  predictor = make_predictor(config, net, ten_patch)
  size = config.data.image_size
  results, skipped, images, kept = [], [], [], []

  def flush():
    if not images:
      return
    batch = np.stack(images + [images[-1]] * (_BATCH - len(images)))  # One compiled shape.
    with jax.set_mesh(mesh):
      probs = np.asarray(predictor(params, batch, stats))[:len(images)]
    for path, p in zip(kept, probs):
      order = np.argsort(-p, kind='stable')[:top]
      results.append({'image': path, 'top5': [
          {'index': int(i), 'name': names[i], 'probability': float(p[i])} for i in order]})
    images.clear()
    kept.clear()

  for path in paths:
    try:
      images.append(_load_image(path, size))
      kept.append(path)
    except (OSError, decode.DecodeError) as e:
      skipped.append(f'{path}: {e}')
    if len(images) == _BATCH:
      flush()
  flush()
  return results, skipped


def main(argv):
  logging.set_verbosity(logging.ERROR)  # The console is for the predictions.
  paths = image_paths(argv[1:])
  if not paths:
    raise errors.UserError('Name at least one image file or folder to predict.')
  config = FLAGS.config
  if config is None:
    raise errors.UserError('Give --config=configs/X.py (and --config.model.pretrained=PATH), '
                           'or --workdir=RUN of a trained run (its saved config is used).')
  workdir = FLAGS.workdir and os.path.abspath(os.path.expanduser(FLAGS.workdir))
  results, skipped = predict(config, workdir, paths, ten_patch=FLAGS.ten_patch,
                             top=FLAGS.top)
  for result in results:
    print(result['image'])
    for entry in result['top5']:
      print(f"  {100 * entry['probability']:6.2f}%  {entry['name']}")
  for line in skipped:
    print(f'Skipped {line}', file=sys.stderr)
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump(results, f, indent=2)
  if not results:
    raise errors.UserError(f'None of the {len(paths)} images could be read.')


if __name__ == '__main__':
  command_line.run(main, saved_config.argv_with_saved_config(sys.argv))
