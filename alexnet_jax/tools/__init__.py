"""Developer commands: look inside the net and time it (`python -m alexnet_jax.tools.X`).

`summary` prints the layer table (docs/paper.md, "The net"), `hlo_audit` the collectives of the
compiled training step, `compile_for` compiles that step for GPU hosts and TPU slices
described in `targets` (memory, largest batch, collectives), `bench` times the step against the PyTorch twins of
`torch_reference`, `input_bench` times the input pipeline stage by stage,
`hang_stress` runs many short training runs under load and counts those that hang, and
`gpu_check` runs the tests, the demo, `bench` and `hlo_audit` on a GPU in one call
(`gpu_check.sh`, with the wheels that `gpu_wheels.sh` prepares).

May import: the library's subpackages (not `experiments`, not the commands), PyTorch
(only `torch_reference`, only when asked for). Nothing in the library imports `tools`.
"""
