"""The net of §3, and the operations it is built from.

`model` is the eight-layer net (Figure 2's two towers, or one) as Flax modules; `lrn` is
§3.3's local response normalisation; `max_pool` (§3.4's overlapping pooling) and
`strided_conv` (conv1's stride 4) are the operations with a second implementation whose
backward pass suits XLA:CPU, chosen per device kind by the caller.

May import: jax, flax, numpy and the standard library. Nothing else of alexnet_jax.
"""
