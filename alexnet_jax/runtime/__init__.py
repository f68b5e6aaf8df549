"""What a training run needs from its surroundings, apart from the net and the data.

`distributed` joins a multi-process JAX job (flags, SLURM, Kubernetes, Cloud TPU);
`preemption` turns a scheduler's notice (or Ctrl-C) into a save and a clean exit;
`watchdog` ends a run whose step hangs (and makes Ctrl-C work while it does);
`metric_writer` writes TensorBoard scalars and images (process 0 only); `chrono` times
the training steps; `command_line` starts a command (configs from any directory, short
errors, a log file); `cache` names the cache folder (weights, where data was prepared);
`errors` holds the errors a user can fix; `shared_memory_leftovers` keeps the resource
tracker quiet about batches in flight at exit.

May import: jax, absl, numpy, Pillow, tensorboardX and the standard library. Nothing of
alexnet_jax.
"""
