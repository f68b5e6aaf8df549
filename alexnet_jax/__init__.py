"""alexnet_jax: a JAX/Flax reproduction of AlexNet (Krizhevsky, Sutskever & Hinton, 2012).

The training core lives here, where `main.py` meets it: the net (`model`, `lrn`, and
`max_pool`, `strided_conv` with backward passes that suit XLA:CPU), its
placement on the mesh (`sharding`), the step and the paper's update (`train_step`,
`optimizer`, `schedules`), the loop (`train`), evaluation (`evaluate`), checkpoints
(`checkpointing`) and the picture of the conv1 kernels (`kernel_picture`). Subpackages:

  data/         from a file on disk to a batch: prepare once, then read
  runtime/      multi-process start-up, preemption, TensorBoard events
  tools/        developer commands (summary, collective audit, benchmarks, PyTorch twins)
  experiments/  the paper's figures and tables

The core imports `data` and `runtime`; it never imports `tools` or `experiments`.
"""
