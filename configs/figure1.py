"""Figure 1 (§3.1): the four-layer CIFAR-10 net, trained with no regularisation of any kind.

  python -m alexnet_jax.experiments.relu_vs_tanh --data=~/data/cifar-10-python.tar.gz \
      --out=runs/figure1
  python -m alexnet_jax.tools.summary --config=configs/figure1.py

The net is cuda-convnet's CIFAR-10 example (`model.layout='cifar10'`, see model.py), on
32x32 images minus the training set's per-pixel mean (§2), whole (no crops, no
reflections, no colour noise), without weight decay, dropout or response normalisation.
The update is §5's with momentum 0.9 (also the cfg's momW) and a constant learning rate;
the experiment sets `model.activation`, `optimizer.learning_rate` and `seed` per run.
"""

from alexnet_jax.configs import default


def get_config():
  config = default.get_config()
  config.mesh.tower = 1
  model = config.model
  model.layout = 'cifar10'
  model.towers = 1
  model.num_classes = 10
  model.lrn = False
  model.dropout_rate = 0.0
  model.init = 'cuda-convnet'  # layers-18pct.cfg's initW.
  data = config.data
  data.source = 'folder'
  data.train_split, data.eval_split = 'train', 'test'
  data.image_size = data.crop_size = 32
  data.flip = False
  data.pca_noise_std = 0.0
  opt = config.optimizer
  opt.weight_decay = 0.0
  opt.schedule, opt.step_epochs = 'steps', ''  # No drops: a constant rate.
  opt.learning_rate = 0.001  # layers-18pct.cfg's epsW; the experiment sweeps it.
  config.train.batch_size = 128
  config.train.num_epochs = 40
  return config
