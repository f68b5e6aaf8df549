"""What a training run needs from its surroundings, apart from the net and the data.

`distributed` joins a multi-process JAX job (flags, SLURM, Kubernetes, Cloud TPU);
`preemption` turns a scheduler's notice into a save and a clean exit; `metric_writer`
writes TensorBoard events (process 0 only); `command_line` starts a command, finding
`--config=configs/x.py` from any working directory.

May import: jax, absl, tensorboardX and the standard library. Nothing of alexnet_jax.
"""
