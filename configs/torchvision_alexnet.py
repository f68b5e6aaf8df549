"""torchvision's AlexNet as published, for its pretrained weights on ILSVRC-2012.

  python -m alexnet_jax.main --config=configs/torchvision_alexnet.py --workdir=runs/tv \
      --config.model.pretrained=alexnet-owt-7be5be79.pth --config.eval.only=True \
      --config.data.manual_dir=/path/to/ILSVRC2012_tars

evaluates torchvision's weights on the validation set (torchvision publishes 56.5% top-1
and 79.1% top-5 accuracy for them, one centre crop). The net is the one-tower
"one weird trick" layout (64-192-384-256-256 kernels, no LRN; docs/paper.md, "The net") with
torchvision's preprocessing: shorter side 256, centre crop 224, RGB/255 minus
(0.485, 0.456, 0.406) divided by (0.229, 0.224, 0.225). Training from it (without
eval.only) starts from the weights and follows the paper's recipe otherwise.
"""

from alexnet_jax.configs import default


def get_config():
  config = default.get_config()
  config.model.layout = 'torchvision'
  config.model.towers = 1
  config.mesh.tower = 1
  config.data.mean = 'torchvision'
  config.eval.ten_patch = False  # torchvision's figures are for one centre crop.
  return config
