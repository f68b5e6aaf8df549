"""Weights from outside a run, and a picture of them.

`weight_files` reads PyTorch state dicts without PyTorch; `published_weights` fetches
torchvision's ImageNet AlexNet by name into a cache, once, checked by its hash;
`pretrained` maps such weights onto the net's layers (§6's fine-tuning start, or a
complete net to evaluate or predict with); `kernel_picture` draws the conv1 kernels as
Figure 3 does.

May import: numpy, Pillow, the standard library and `alexnet_jax.runtime`.
"""
