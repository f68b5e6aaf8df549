"""The paper's figures and tables reproduced: each a library function and a thin command.

May import: the library (`alexnet_jax`, `alexnet_jax.data`, `alexnet_jax.runtime`) and
`alexnet_jax.tools`. Nothing in the library imports `experiments`.
"""
