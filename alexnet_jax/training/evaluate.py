"""Top-1 and top-5 error on a whole split: the centre patch and the paper's ten patches.

§4.1: "At test time, the network makes a prediction by extracting five 224x224 patches (the
four corner patches and the center patch) as well as their horizontal reflections (hence
ten patches in all), and averaging the predictions made by the network's softmax layer on
the ten patches." Several nets (the paper's "5 CNNs", §6) are combined the same way: their
softmax outputs are averaged. Padding rows of the last batch carry mask 0 and count nowhere,
so every example of the split counts exactly once.
"""

import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from alexnet_jax.data import augment
from alexnet_jax.training import sharding, train_step

_CENTRE = 4  # augment.ten_patches' order: four corners, the centre, then reflections.
PROGRESS_SECONDS = 30


def _softmax_of(model, params_list: Sequence, patches: jax.Array) -> jax.Array:
  """Softmax outputs averaged over the nets: patches (b, c, c, 3) -> (b, classes)."""
  logits = [model.apply({'params': p}, patches, train=False) for p in params_list]
  with jax.named_scope('softmax'):  # Over fc8's outputs, split over the towers.
    return sum(jax.nn.softmax(x) for x in logits) / len(logits)


def _error_sums(probs: jax.Array, labels: jax.Array, mask: jax.Array, prefix: str):
  with jax.named_scope('softmax'):  # fc8's outputs are split over the towers.
    errors = train_step.top_k_errors(probs, labels)
    return {f'{prefix}_{name}': jnp.sum(value * mask) for name, value in errors.items()}


def make_eval_step(config: ml_collections.ConfigDict, model, mesh: Mesh,
                   ten_patch: bool | None = None) -> Callable:
  """The jitted step: (params_list, batch, stats) -> sums of errors over the batch.

  batch: 'image' uint8 (b, size, size, 3), 'label', 'mask', split over 'data'. Call it
  inside `jax.set_mesh(mesh)`. `ten_patch`: also the ten-patch errors (default:
  config.eval.ten_patch).
  """
  crop = config.data.crop_size
  ten_patch = config.eval.ten_patch if ten_patch is None else ten_patch

  def eval_fn(params_list, batch, stats):
    mask = batch['mask'].astype(jnp.float32)
    labels = batch['label']
    if ten_patch:
      patches = augment.ten_patches(batch['image'], stats, crop)  # (10, b, c, c, 3)
      b = patches.shape[1]
      # Example-major, so each device keeps the patches of its own examples.
      per_example = jnp.swapaxes(patches, 0, 1).reshape(b * 10, crop, crop, 3)
      probs = _softmax_of(model, params_list, per_example).reshape(b, 10, -1)
      centre = probs[:, _CENTRE]
      ten = probs.mean(axis=1)
    else:
      centre = _softmax_of(model, params_list,
                           augment.center_patch(batch['image'], stats, crop))
    sums = {'count': jnp.sum(mask), **_error_sums(centre, labels, mask, 'centre')}
    if ten_patch:
      sums.update(_error_sums(ten, labels, mask, 'ten_patch'))
    return sums

  return jax.jit(eval_fn, out_shardings=NamedSharding(mesh, P()))


def evaluate(eval_step: Callable, params_list: Sequence, batches, mesh: Mesh,
             stats, progress: Callable[[str], None] | None = None) -> dict[str, float]:
  """Error rates (fractions) over all `batches` (this process's share of each).

  Returns {'count', 'centre_top1_error', 'centre_top5_error'} and, with ten-patch testing,
  'ten_patch_top1_error' and 'ten_patch_top5_error'. `progress(line)`, if given, hears how
  far the pass has come every `PROGRESS_SECONDS`.
  """
  totals = None
  start = last_report = time.time()
  with jax.set_mesh(mesh):
    for i, local_batch in enumerate(batches):
      # Summed on the host: no program between steps (sharding.one_program_at_a_time).
      sums = jax.device_get(eval_step(params_list, sharding.global_batch(mesh, local_batch),
                                      stats))
      totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
      if progress is not None and time.time() - last_report > PROGRESS_SECONDS:
        last_report = time.time()
        progress(f'evaluating: {i + 1} batches in {last_report - start:.0f} s')
  if totals is None:
    raise ValueError('The evaluation split yielded no batches.')
  totals = {k: float(np.asarray(v)) for k, v in totals.items()}
  count = totals.pop('count')
  return {'count': int(count), **{k: v / count for k, v in totals.items()}}


def error_table(results: dict[str, float], num_classes: int) -> str:
  """The errors as a table; top-5 only when there are more than 5 classes (else it is 0)."""
  top5 = num_classes > 5
  lines = [f"Validation, {results['count']} images   top-1 error" + '   top-5 error' * top5]
  for prefix, title in (('centre', 'centre patch'), ('ten_patch', 'ten patches (§4.1)')):
    if f'{prefix}_top1_error' in results:
      lines.append(f"{title:<27}{100 * results[f'{prefix}_top1_error']:>10.2f}%"
                   + f"{100 * results[f'{prefix}_top5_error']:>13.2f}%" * top5)
  return '\n'.join(lines)
