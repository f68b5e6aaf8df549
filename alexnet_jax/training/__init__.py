"""Training and testing as §4-§5 describe them, on a mesh of devices.

`preflight` checks a config (its schema: every field's allowed values) and the data
before any long work; `sharding` lays the two towers and the batch on the mesh;
`optimizer` and `schedules` are §5's update and learning-rate rules; `train_step` is one
step of it; `evaluate` tests a net on the centre patch or §4.1's ten patches; `train` is
the loop that runs them in a workdir, and the evaluation of saved nets.

May import: `alexnet_jax.nn`, `data`, `run`, `weights` and `runtime`. Never `tools`,
`experiments` or the commands.
"""
