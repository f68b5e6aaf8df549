"""The paper's figures and tables reproduced: each a library function and a thin command.

`conv1_kernels` draws Figure 3 (a run's conv1 kernels, tower by tower) and measures §6.1's
colour specialisation of the towers; `retrieval` is Figure 4 (§6.1: the training images
nearest to a query by fc7 activations, against nearest by pixels, with precision@k);
`trained_net` is what both share: their flags, and a run's checkpoint restored.

May import: the library (`alexnet_jax`, `alexnet_jax.data`, `alexnet_jax.runtime`) and
`alexnet_jax.tools`. Nothing in the library imports `experiments`.
"""
