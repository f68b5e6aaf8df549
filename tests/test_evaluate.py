"""training/evaluate.py: the centre and ten-patch errors of a net on the evaluation split,
each example counted once, and the table of errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax.data import pipeline, prepare
from alexnet_jax.training import evaluate, sharding


class IgnoresInput(nn.Module):
  """Scores the classes by fixed numbers, whatever the image."""

  @nn.compact
  def __call__(self, images, *, train):
    scores = self.param('scores', lambda key: jnp.arange(10.0) % 4)
    return jnp.broadcast_to(scores, (images.shape[0], 10))


def test_ten_patch_of_input_ignoring_net_equals_centre_and_counts_each_example(
    data_dir, tiny_config):
  config = tiny_config(data_dir)
  mesh = sharding.make_mesh(config)
  stats = jax.device_put(prepare.ready(config))  # Generates the data if needed.
  net = IgnoresInput()
  params = net.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False)['params']
  step = evaluate.make_eval_step(config, net, mesh)
  batches = pipeline.create_eval_iterator(config)
  results = evaluate.evaluate(step, [params], batches, mesh, stats)
  labels = np.concatenate([b['label'][b['mask']]
                           for b in pipeline.create_eval_iterator(config)])
  assert results['count'] == len(labels) == 37
  # Scores 3 for classes 3 and 7: argmax (ties to the lower index) is class 3.
  assert results['centre_top1_error'] == pytest.approx(1 - np.mean(labels == 3))
  in_top5 = np.isin(labels, [3, 7, 2, 6, 1])  # Scores 3, 3, 2, 2, 1 (index breaks ties).
  assert results['centre_top5_error'] == pytest.approx(1 - np.mean(in_top5))
  assert results['ten_patch_top1_error'] == results['centre_top1_error']
  assert results['ten_patch_top5_error'] == results['centre_top5_error']


def test_top5_errors_are_shown_only_for_more_than_five_classes():
  results = {'count': 8, 'centre_top1_error': 0.25, 'centre_top5_error': 0.0}
  two = evaluate.error_table(results, num_classes=2)
  assert 'top-5' not in two and '25.00%' in two
  assert 'top-5 error' in evaluate.error_table(results, num_classes=10)
