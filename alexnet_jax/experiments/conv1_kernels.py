"""Figure 3 (§6.1): a run's learned conv1 kernels, drawn as the paper does, and how
colour-specific each tower's kernels are.

  python -m alexnet_jax.experiments.conv1_kernels --workdir=runs/alexnet
  python -m alexnet_jax.experiments.conv1_kernels --workdir=runs/alexnet --step=50000
  python -m alexnet_jax.experiments.conv1_kernels --weights=torchvision \
      --out_dir=figures

The picture is kernel_picture.kernel_grid's: the 96 kernels of 11x11x3 in rows of 16,
tower 1's 48 on the upper three rows, tower 2's 48 on the lower three, one contrast scale
for all. §6.1 observes that the kernels of GPU 1 come out largely colour-agnostic and those
of GPU 2 largely colour-specific (which tower gets which varies from run to run). The
measure here: each kernel's chroma energy share, the energy of the kernel minus its
per-pixel grey (the mean of its R, G, B weights) over the kernel's energy: 0 for a grey
kernel, 2/3 for a kernel on one colour channel alone, 1 for one with no grey at all
(e.g. red minus green). It is averaged per tower. Untrained kernels (independent random
weights, §5) measure 2/3 on average, so a colour-agnostic tower is one well below that.

Writes `conv1_kernels_step<N>.png` and `.json` to --out_dir (default WORKDIR/figures) and
prints the per-tower shares. `write_figure` does the same for any HWIO array of RGB
kernels; `--weights` draws a torchvision state dict's conv1 (`features.0.weight`, 64
kernels, one tower) as `conv1_kernels_<file name>.png` in --out_dir.
"""

import json
import os
import sys

import jax
import numpy as np
from absl import app, flags
from PIL import Image

from alexnet_jax.experiments import trained_net
from alexnet_jax.run import saved_config
from alexnet_jax.runtime import command_line, errors
from alexnet_jax.weights import kernel_picture, published_weights, weight_files

FLAGS = flags.FLAGS


def chroma_shares(kernels: np.ndarray) -> np.ndarray:
  """Per kernel of HWIO `(h, w, 3, n)`: energy off the grey axis over total energy, (n,).

  A kernel of zeros counts as grey (0).
  """
  kernels = np.asarray(kernels, np.float64)
  grey = kernels.mean(axis=2, keepdims=True)
  chroma = ((kernels - grey) ** 2).sum(axis=(0, 1, 2))
  total = (kernels ** 2).sum(axis=(0, 1, 2))
  return np.divide(chroma, total, out=np.zeros_like(total), where=total > 0)


def tower_summary(shares: np.ndarray, towers: int) -> list[dict]:
  """The chroma shares of each tower's kernels (consecutive along O), summarised."""
  per_tower = len(shares) // towers
  return [{'tower': t + 1, 'kernels': f'{t * per_tower + 1}-{(t + 1) * per_tower}',
           'chroma_share_mean': float(part.mean()),
           'chroma_share_median': float(np.median(part))}
          for t, part in enumerate(np.split(shares, towers))]


def write_figure(kernels: np.ndarray, towers: int, out_dir: str, name: str,
                 source: str) -> dict:
  """Writes `<out_dir>/<name>.png` (Figure 3's picture) and `<name>.json` (the chroma
  shares, per tower and per kernel) for HWIO RGB `kernels`; returns the JSON's contents.

  `source` says in the JSON where the kernels come from (a checkpoint, a file).
  """
  kernels = np.asarray(kernels)
  picture = kernel_picture.kernel_grid(kernels, towers)
  shares = chroma_shares(kernels)
  png, json_path = (os.path.join(out_dir, f'{name}.{ext}') for ext in ('png', 'json'))
  Image.fromarray(picture).save(png)
  h, w, c, n = kernels.shape
  summary = {'source': source, 'kernels': f'{n} of {h}x{w}x{c}', 'towers': towers,
             'picture': os.path.basename(png), 'per_tower': tower_summary(shares, towers),
             'chroma_share_per_kernel': [round(float(s), 4) for s in shares]}
  with open(json_path, 'w') as f:
    json.dump(summary, f, indent=2)
  return summary


def format_summary(summary: dict) -> str:
  """The lines the command prints."""
  lines = [f"conv1 of {summary['source']}: {summary['kernels']}, {summary['towers']} "
           'tower(s)',
           'chroma energy share (0: grey; 2/3: one colour channel alone; 1: no grey at all)']
  for t in summary['per_tower']:
    lines.append(f"  tower {t['tower']} (kernels {t['kernels']}): mean "
                 f"{t['chroma_share_mean']:.3f}, median {t['chroma_share_median']:.3f}")
  lines.append(f"Wrote {summary['picture']} and its .json")
  return '\n'.join(lines)


def file_figure(path: str, out_dir: str) -> dict:
  """Figure 3's picture and shares for the conv1 of a torchvision state dict at `path` (or
  of a published one by name: 'torchvision')."""
  path = published_weights.resolve(path)
  state = weight_files.read_state_dict(path)
  if 'features.0.weight' not in state:
    raise errors.UserError(f'{path} has no features.0.weight (torchvision AlexNet\'s conv1).')
  os.makedirs(out_dir, exist_ok=True)
  name = os.path.splitext(os.path.basename(path))[0]
  return write_figure(state['features.0.weight'].transpose(2, 3, 1, 0), 1, out_dir,
                      f'conv1_kernels_{name}', os.path.basename(path))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if bool(FLAGS.weights) == bool(FLAGS.workdir):
    raise errors.UserError('Give either --workdir=RUN (a training run) or --weights=FILE (a '
                           'torchvision state dict).')
  if FLAGS.weights:
    if not FLAGS.out_dir:
      raise errors.UserError('--weights needs --out_dir: where to write the figure.')
    print(format_summary(file_figure(FLAGS.weights, FLAGS.out_dir)))
    return
  config, out_dir = trained_net.start()
  _, _, params, step = trained_net.restore(config, FLAGS.workdir,
                                           None if FLAGS.step < 0 else FLAGS.step)
  kernels = jax.device_get(params['conv1']['kernel'])
  summary = write_figure(kernels, config.model.towers, out_dir, f'conv1_kernels_step{step}',
                         f'{os.path.basename(os.path.normpath(FLAGS.workdir))} step {step}')
  print(format_summary(summary))


if __name__ == '__main__':
  trained_net.define_flags(workdir_required=False)
  flags.DEFINE_string('weights', None, 'Instead of --workdir: a torchvision state dict '
                      '(.pth, .npz, .safetensors) whose conv1 to draw, or torchvision (its '
                      'published weights, downloaded once).')
  command_line.run(main, saved_config.argv_with_saved_config(sys.argv))
