"""configs/: every config loads, every ilsvrc2012 variant changes only what it names, and
what each config is for (the paper's recipe, the offline demo, Figure 1's net) holds in
the code that reads it, rather than in a copy of its literals."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alexnet_jax.configs import default, demo, figure1, ilsvrc2012
from alexnet_jax.data import augment, pipeline, statistics
from alexnet_jax.nn import model
from alexnet_jax.tools import summary
from alexnet_jax.training import inputs, preflight, schedules, sharding, train_step

ILSVRC2012_TRAIN_IMAGES = 1_281_167


def flat(config):
  return {f'{s}.{f}': v for s, sub in config.items() if hasattr(sub, 'items')
          for f, v in sub.items()}


def test_the_paper_recipe_is_the_default_and_builds_the_papers_net():
  config = ilsvrc2012.get_config()
  assert config == default.get_config()
  preflight.check_config(config)
  # §4's "60 million parameters": 60,965,224 in Figure 2's two towers (docs/paper.md).
  assert sum(r.params for r in summary.layer_rows(config)) == 60_965_224


def test_the_paper_recipe_trains_as_section_5_says(monkeypatch):
  config = ilsvrc2012.get_config()
  # "a batch size of 128 examples", "roughly 90 cycles through the training set of 1.2
  # million images": the steps a run on ILSVRC-2012's training set takes.
  monkeypatch.setattr(pipeline, 'num_examples', lambda *_: ILSVRC2012_TRAIN_IMAGES)
  steps_per_epoch, total_steps, _ = inputs.steps(config)
  assert steps_per_epoch == ILSVRC2012_TRAIN_IMAGES // 128
  assert total_steps == math.ceil(90 * steps_per_epoch)

  # "v <- 0.9 v - 0.0005 eps w - eps g; w <- w + v", eps "initialized at 0.01", weight
  # decay on weights, not biases: two updates of the optimizer and schedule the config
  # makes, against the rule by hand.
  tx = train_step.make_optimizer(config)
  eps = schedules.make_schedule(config, steps_per_epoch, total_steps)(0)
  params = {'fc8': {'kernel': np.full((1, 1), 2.0, np.float32),
                    'bias': np.full((1,), 3.0, np.float32)}}
  grads = jax.tree.map(lambda p: np.full_like(p, 0.5), params)
  state = tx.init(params)
  w, b, v_w, v_b = 2.0, 3.0, 0.0, 0.0
  for _ in range(2):
    updates, state = tx.update(grads, state, params, learning_rate=eps)
    params = optax.apply_updates(params, updates)
    v_w = 0.9 * v_w - 0.0005 * 0.01 * w - 0.01 * 0.5
    v_b = 0.9 * v_b - 0.01 * 0.5
    w, b = w + v_w, b + v_b
    np.testing.assert_allclose(updates['fc8']['kernel'], [[v_w]], rtol=1e-5)
    np.testing.assert_allclose(updates['fc8']['bias'], [v_b], rtol=1e-5)
  np.testing.assert_allclose(params['fc8']['kernel'], [[w]], rtol=1e-6)

  # "divide the learning rate by 10 when the validation error rate stopped improving ...
  # reduced three times prior to termination."
  plateau = schedules.Plateau.from_config(config)
  factors = [plateau.update(0.5) for _ in range(50)]
  assert factors == sorted(factors, reverse=True)
  assert sorted(set(factors), reverse=True) == pytest.approx([1.0, 0.1, 0.01, 0.001])


@pytest.mark.parametrize('variant', sorted(ilsvrc2012.VARIANTS))
def test_variant_changes_only_its_fields(variant):
  base, changed = flat(ilsvrc2012.get_config()), flat(ilsvrc2012.get_config(variant))
  differing = {k for k in base if base[k] != changed[k]}
  assert differing == set(ilsvrc2012.VARIANTS[variant][1])
  model.layer_plan(ilsvrc2012.get_config(variant).model)  # A valid net.


def test_unknown_variant_lists_the_known_ones():
  with pytest.raises(ValueError, match="Unknown variant 'nolrn'.*'no_lrn'"):
    ilsvrc2012.get_config('nolrn')


def test_the_demo_is_the_papers_net_smaller_with_a_tower_on_each_forced_device():
  config, paper = demo.get_config(), default.get_config()
  preflight.check_config(config)
  # "The net is the paper's": of the model's fields only the classes and the
  # initialisation (part of the recipe) differ.
  ours, papers = flat(config), flat(paper)
  assert {k for k in papers if k.startswith('model.') and ours[k] != papers[k]} == {
      'model.num_classes', 'model.init'}
  # "Small images keep it fast": a small share of the paper's work per image.
  assert (sum(r.macs for r in summary.layer_rows(config))
          < 0.1 * sum(r.macs for r in summary.layer_rows(paper)))
  # "each tower on its own (forced CPU) device": the devices it forces hold one replica
  # of the two towers, and its batches divide over them.
  mesh = sharding.make_mesh(config, jax.devices()[:config.host_devices])
  assert dict(mesh.shape) == {'data': 1, 'tower': config.model.towers}
  sharding.check_batch(config.train.batch_size, mesh)
  sharding.check_batch(config.eval.batch_size, mesh, 'eval.batch_size')


def test_figure1_trains_with_no_regularisation_of_any_kind():
  """§3.1, Figure 1: "No regularization of any kind was employed": no response
  normalisation, dropout, weight decay or augmentation, in the code the config drives."""
  config = figure1.get_config()
  preflight.check_config(config)
  convs, _ = model.layer_plan(config.model)
  assert not any(c.lrn for c in convs)
  # No dropout: training computes what evaluation does.
  net = model.create_model(config)
  size = config.data.crop_size
  images = jax.random.normal(jax.random.key(1), (4, size, size, 3)) * 50
  params = net.init(jax.random.key(0), images, train=False)['params']
  np.testing.assert_array_equal(
      net.apply({'params': params}, images, train=True, rngs={'dropout': jax.random.key(2)}),
      net.apply({'params': params}, images, train=False))
  # No weight decay: a zero gradient leaves every parameter where it is.
  tx = train_step.make_optimizer(config)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params,
                         learning_rate=config.optimizer.learning_rate)
  assert not any(np.any(u) for u in jax.tree.leaves(updates))
  # No augmentation: every draw of a training input is the whole image minus the mean
  # (no crop, reflection or colour noise).
  side = config.data.image_size
  rng = np.random.default_rng(0)
  mean = rng.uniform(0, 255, (side, side, 3)).astype(np.float32)
  stats = statistics.DataStats(mean, statistics.IMAGENET_PCA_EIGVAL * 255,
                               statistics.IMAGENET_PCA_EIGVEC)
  aug = augment.HostAugment(stats, crop_size=config.data.crop_size, flip=config.data.flip,
                            pca_noise_std=config.data.pca_noise_std)
  image = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
  for _ in range(10):
    np.testing.assert_array_equal(aug.apply(image, aug.sample(rng)), image - mean)
