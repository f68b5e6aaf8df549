"""The paper's figures and tables reproduced: each a library function and a thin command.

  ablation_runner   the ablation study (§3.2-§4.2, §7): the baseline over several seeds,
                    then the named variants of configs/ilsvrc2012.py, over several seeds
  ablation_report   its report: errors over the seeds, changes against the baseline with
                    their intervals, and the paper's; Markdown tables and a chart
  seed_statistics   mean and spread over seeds; Welch's interval for a difference
  learning_curves   §4.2: a variant's training and validation error over the epochs beside
                    the baseline's (overfitting without dropout), and where they cross
  bar_chart         grouped bar charts as PNG, drawn with Pillow
  conv1_kernels     Figure 3: a run's conv1 kernels, tower by tower, and §6.1's colour
                    specialisation of the towers measured
  retrieval         Figure 4 (§6.1): the training images nearest to a query by fc7
                    activations, against nearest by pixels, with precision@k
  trained_net       what conv1_kernels and retrieval share: their flags, a run restored
  relu_vs_tanh      Figure 1 (§3.1): ReLU against tanh on CIFAR-10, epochs to 25% error
  image_arrays      a small image folder held in memory (relu_vs_tanh's data)
  line_chart        a figure's curves as PNG, drawn with Pillow

May import: every subpackage of the library, `alexnet_jax.tools` and
`alexnet_jax.configs` (the named variants); not the commands. Nothing in the library
imports `experiments`.
"""
