"""alexnet_jax: a JAX/Flax reproduction of AlexNet (Krizhevsky, Sutskever & Hinton, 2012).

The commands live here: `main` (train, resume, evaluate) and `predict`. The rest is in
subpackages, each importing only the ones below it (tests/test_layout.py checks it):

  experiments/  the paper's figures and tables
  tools/        developer commands (summary, collective audit, benchmarks, PyTorch twins)
  configs       the run configurations (the top-level configs/ folder, installed here)
  training/     §4-§5: config checks, the mesh, the update, the step, evaluation, the loop
  weights/      weights from outside (PyTorch files, torchvision's by name), Figure 3
  run/          a run's workdir: checkpoints, saved config, the lock
  nn/           §3: the net and its operations
  data/         from a file on disk to a batch: prepare once, then read
  runtime/      multi-process start-up, preemption, watchdog, TensorBoard events
"""
