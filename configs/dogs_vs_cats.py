"""Fine-tuning torchvision's pretrained AlexNet on Dogs vs Cats (not in the paper).

  python -m alexnet_jax.data.prepare --config=configs/dogs_vs_cats.py \
      --config.data.folder=/path/to/cats_and_dogs_filtered
  python -m alexnet_jax.main --config=configs/dogs_vs_cats.py --workdir=runs/dogs_vs_cats \
      --config.data.folder=/path/to/cats_and_dogs_filtered

The folder holds train/{cats,dogs}/*.jpg and validation/{cats,dogs}/*.jpg: the filtered
Kaggle subset of 2,000 training and 1,000 validation photos, published as
https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip. The weights are
torchvision's published ImageNet AlexNet (`model.pretrained='torchvision'`: downloaded once;
a path to `alexnet-owt-7be5be79.pth` works too), of which only conv1-conv5 are loaded
(`model.pretrained_layers`); fc6-fc8 start fresh. The recipe: torchvision's net and
preprocessing, the pretrained conv1-conv5 frozen (`optimizer.lr_multipliers`; the paper's
update rule for the rest), fc6-fc8 trained for 8 epochs with the paper's augmentation and
dropout.

Measured on a 2-core CPU from torchvision's conv1-conv5:
95.8% validation accuracy on the centre crop (96.3% with ten patches), 95.4% after the
first epoch; 8 epochs take about 5 minutes on a quiet machine (README.md, "Pretrained
weights, fine-tuning and prediction"). From random initialisation the same recipe stays
at chance (50%).
"""

from alexnet_jax.configs import torchvision_alexnet


def get_config():
  config = torchvision_alexnet.get_config()
  config.model.num_classes = 2
  config.model.init = 'caffe'  # For the fresh fully connected layers.
  config.model.pretrained = 'torchvision'
  config.model.pretrained_layers = 'conv1,conv2,conv3,conv4,conv5'  # fc6-fc8 start fresh.
  config.data.source = 'folder'
  config.data.data_dir = '~/.cache/alexnet_jax/dogs_vs_cats'
  config.data.train_split = 'train'
  config.data.eval_split = 'validation'
  config.data.worker_count = 2
  config.optimizer.lr_multipliers = 'conv1=0,conv2=0,conv3=0,conv4=0,conv5=0'
  config.optimizer.learning_rate = 0.01
  config.optimizer.schedule = 'steps'
  config.optimizer.step_epochs = '6'
  config.train.batch_size = 32
  config.train.num_epochs = 8
  config.train.log_every_steps = 20
  config.eval.batch_size = 50
  config.checkpoint.every_steps = 200
  return config
