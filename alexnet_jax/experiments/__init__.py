"""The paper's figures and tables reproduced: each a library function and a thin command.

`relu_vs_tanh` is Figure 1 (§3.1); `image_arrays` holds a small image folder in memory and
`line_chart` draws a figure's curves (Pillow only).

May import: the library (`alexnet_jax`, `alexnet_jax.data`, `alexnet_jax.runtime`),
`alexnet_jax.tools` and the project's `configs`. Nothing in the library imports
`experiments`.
"""
