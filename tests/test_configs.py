"""Every config loads, every ilsvrc2012 variant changes only what it names."""

import pytest

from alexnet_jax.configs import default, demo, figure1, ilsvrc2012
from alexnet_jax.nn import model
from alexnet_jax.training import preflight


def flat(config):
  return {f'{s}.{f}': v for s, sub in config.items() if hasattr(sub, 'items')
          for f, v in sub.items()}


def test_paper_recipe_is_the_default():
  config = ilsvrc2012.get_config()
  assert config == default.get_config()
  assert (config.train.batch_size, config.optimizer.momentum, config.optimizer.weight_decay,
          config.optimizer.learning_rate, config.optimizer.schedule,
          config.optimizer.plateau_max_drops) == (128, 0.9, 5e-4, 0.01, 'plateau', 3)


@pytest.mark.parametrize('variant', sorted(ilsvrc2012.VARIANTS))
def test_variant_changes_only_its_fields(variant):
  base, changed = flat(ilsvrc2012.get_config()), flat(ilsvrc2012.get_config(variant))
  differing = {k for k in base if base[k] != changed[k]}
  assert differing == set(ilsvrc2012.VARIANTS[variant][1])
  model.layer_plan(ilsvrc2012.get_config(variant).model)  # A valid net.


def test_unknown_variant_lists_the_known_ones():
  with pytest.raises(ValueError, match="Unknown variant 'nolrn'.*'no_lrn'"):
    ilsvrc2012.get_config('nolrn')


def test_demo_is_small_and_offline():
  config = demo.get_config()
  assert config.data.source == 'synthetic' and config.mesh.tower == 2
  assert config.host_devices == 2


def test_figure1_has_no_regularisation_of_any_kind():
  config = figure1.get_config()
  preflight.check_config(config)
  assert (config.model.layout, config.model.lrn, config.model.dropout_rate) == (
      'cifar10', False, 0.0)
  assert (config.optimizer.weight_decay, config.data.flip, config.data.pca_noise_std) == (
      0.0, False, 0.0)
  assert config.data.crop_size == config.data.image_size == 32  # No crops (§3.1).
