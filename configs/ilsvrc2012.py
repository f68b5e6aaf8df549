"""The paper's recipe on ILSVRC-2012 (§4-§5), and its ablations as named variants.

  python -m alexnet_jax.data.prepare --config=configs/ilsvrc2012.py \
      --config.data.manual_dir=/path/to/ILSVRC2012_tars
  python -m alexnet_jax.main --config=configs/ilsvrc2012.py --workdir=runs/alexnet
  python -m alexnet_jax.main --config=configs/ilsvrc2012.py:no_lrn --workdir=runs/no_lrn

Two towers, batch 128, SGD with momentum 0.9 and weight decay 0.0005, learning rate 0.01
divided by 10 when the validation error stops improving (at most three times), 90 epochs.
Each variant changes only what its ablation changes; the same fields can be overridden one
by one instead (e.g. --config.model.lrn=False).
"""

from alexnet_jax.configs import default

# Variant name -> (what it ablates, {config path: value}).
VARIANTS = {
    'no_lrn': ('§3.3: no local response normalisation', {'model.lrn': False}),
    'no_overlap': ('§3.4: pooling z=2, s=2 instead of z=3, s=2', {'model.pool_window': 2}),
    'one_tower': ('§3.2, footnote 2: one tower with half the kernels',
                  {'model.towers': 1, 'mesh.tower': 1}),
    'no_pca': ('§4.1: no PCA colour noise', {'data.pca_noise_std': 0.0}),
    'no_dropout': ('§4.2: no dropout', {'model.dropout_rate': 0.0}),
    'tanh': ('§3.1: tanh instead of ReLU', {'model.activation': 'tanh'}),
    'no_conv3': ('§7: without conv3', {'model.remove_conv': 'conv3'}),
    'no_conv4': ('§7: without conv4', {'model.remove_conv': 'conv4'}),
    'no_conv5': ('§7: without conv5', {'model.remove_conv': 'conv5'}),
    'conv6': ('Table 2, "1 CNN*": an extra sixth conv layer', {'model.extra_conv6': True}),
    'caffe': ("Caffe's bvlc_alexnet: 227 crops, LRN alpha/n, its initialisation",
              {'data.crop_size': 227, 'model.lrn_alpha_convention': 'divided',
               'model.init': 'caffe'}),
}


def get_config(variant: str = ''):
  """The paper's recipe, or one of VARIANTS (`--config=configs/ilsvrc2012.py:VARIANT`)."""
  config = default.get_config()
  if variant:
    if variant not in VARIANTS:
      raise ValueError(f'Unknown variant {variant!r} of configs/ilsvrc2012.py; choose one of '
                       f'{sorted(VARIANTS)}.')
    for path, value in VARIANTS[variant][1].items():
      section, field = path.split('.')
      config[section][field] = value
  return config
