"""The paper's figures and tables reproduced: each a library function and a thin command.

  ablation_report   the ablation study's report (§3.2-§4.2, §7): errors, changes against
                    the baseline and the paper's, the noise band of the baseline's seeds;
                    a Markdown table and a chart
  bar_chart         grouped bar charts as PNG, drawn with Pillow

May import: the library (`alexnet_jax`, `alexnet_jax.data`, `alexnet_jax.runtime`),
`alexnet_jax.tools`, and `configs` (the named variants). Nothing in the library imports
`experiments`.
"""
