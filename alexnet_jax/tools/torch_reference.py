"""PyTorch twins of the nets and their training step, used only by the benchmark (bench.py).

They exist so that `python -m alexnet_jax.tools.bench --torch` can time the same training work
in PyTorch in the same run; nothing else in alexnet_jax imports this file, and PyTorch is
not a dependency (install it yourself to use --torch). Two layouts (docs/paper.md, "The net"):

- `TorchvisionAlexNet`: torchvision's `alexnet` (64-192-384-256-256, no LRN, pad 2 in
  conv1, dropout before fc6 and fc7), written out rather than imported, with the same
  state_dict names (`features.{0,3,6,8,10}`, `classifier.{1,4,6}`): 61,100,840 parameters.
- `PaperAlexNet`: the paper's two towers as grouped convolutions (groups=2 in conv2, conv4,
  conv5), LRN inside each tower, cuda-convnet's conv1 geometry (zero rows/columns at the
  bottom/right, 55x55 from 224 crops), dropout after fc6 and fc7: 60,965,224 parameters.

`torch.nn.LocalResponseNorm` divides alpha by the window size (docs/paper.md, "Layers"), so the
paper's formula as printed (alpha=1e-4) is `LocalResponseNorm(5, alpha=5e-4, beta=0.75,
k=2)`: pass `lrn_alpha` = size x the effective alpha of lrn.effective_alpha.
"""

import math
import time

import torch
from torch import nn
from torch.nn import functional as F

from alexnet_jax.nn import lrn

LAYOUTS = ('paper', 'torchvision')


class TowerLRN(nn.Module):
  """LocalResponseNorm over the channels of each tower separately (§3.3)."""

  def __init__(self, towers: int, size: int, alpha: float, beta: float, k: float):
    super().__init__()
    self.towers = towers
    self.norm = nn.LocalResponseNorm(size, alpha=alpha, beta=beta, k=k)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    return self.norm(x.reshape(n * self.towers, c // self.towers, h, w)).reshape(n, c, h, w)


class ConvnetPad(nn.Module):
  """cuda-convnet's geometry: out = 1 + ceil((size - kernel) / stride), zeros at the end."""

  def __init__(self, kernel: int, stride: int):
    super().__init__()
    self.kernel, self.stride = kernel, stride

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    pads = []
    for size in (x.shape[3], x.shape[2]):  # F.pad lists the last dimension first.
      out = 1 + math.ceil((size - self.kernel) / self.stride)
      pads += [0, max(0, (out - 1) * self.stride + self.kernel - size)]
    return F.pad(x, pads)


class TorchvisionAlexNet(nn.Module):
  """torchvision.models.alexnet's layout ("one weird trick"), same parameter names."""

  def __init__(self, num_classes: int = 1000, dropout: float = 0.5):
    super().__init__()
    self.features = nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
    self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
    self.classifier = nn.Sequential(
        nn.Dropout(dropout), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
        nn.Dropout(dropout), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
        nn.Linear(4096, num_classes))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class PaperAlexNet(nn.Module):
  """The paper's two-tower net (Figure 2) with grouped convolutions; NCHW input.

  fc6's input size follows `crop_size` (9216 for 224 crops), as in the JAX model.
  Flattening is PyTorch's (c, h, w) order, not the JAX model's (h, w, c).
  """

  def __init__(self, num_classes: int = 1000, crop_size: int = 224, *, lrn: bool = True,
               lrn_size: int = 5, lrn_alpha: float = 5e-4, lrn_beta: float = 0.75,
               lrn_k: float = 2.0, dropout: float = 0.5):
    super().__init__()

    def norm():
      if not lrn:
        return nn.Identity()
      return TowerLRN(2, lrn_size, lrn_alpha, lrn_beta, lrn_k)

    self.features = nn.Sequential(
        ConvnetPad(11, 4), nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(inplace=True), norm(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(inplace=True), norm(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2))
    with torch.no_grad():  # One image through the features gives fc6's input size.
      flat = self.features(torch.zeros(1, 3, crop_size, crop_size)).numel()
    self.classifier = nn.Sequential(
        nn.Linear(flat, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
        nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
        nn.Linear(4096, num_classes))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.classifier(torch.flatten(self.features(x), 1))


def num_params(net: nn.Module) -> int:
  return sum(p.numel() for p in net.parameters())


def build(layout: str, config) -> nn.Module:
  """The PyTorch twin of `layout`, with the classes, crop, LRN and dropout of `config`."""
  m = config.model
  if layout == 'torchvision':
    return TorchvisionAlexNet(m.num_classes, m.dropout_rate)
  if layout == 'paper':
    alpha = lrn.effective_alpha(m.lrn_alpha, m.lrn_size, m.lrn_alpha_convention)
    return PaperAlexNet(m.num_classes, config.data.crop_size, lrn=m.lrn, lrn_size=m.lrn_size,
                        lrn_alpha=alpha * m.lrn_size, lrn_beta=m.lrn_beta, lrn_k=m.lrn_k,
                        dropout=m.dropout_rate)
  raise ValueError(f'PyTorch layout {layout!r}: use one of {LAYOUTS}.')


def device() -> torch.device:
  """Where the PyTorch side runs: the first CUDA device if this PyTorch has one."""
  return torch.device('cuda' if torch.cuda.is_available() else 'cpu')


def time_training(net: nn.Module, config, *, batch: int, steps: int, warmup: int,
                  bf16: bool, channels_last: bool, compile_net: bool) -> dict:
  """Seconds per training step of `net` on one random batch already on the device.

  A step: forward under bf16 autocast (if `bf16`), cross-entropy, backward, SGD with the
  config's learning rate, momentum and weight decay (fused on CUDA, foreach on CPU).
  On CUDA the steps are timed with CUDA events (the host may run ahead, as in training);
  on CPU, where PyTorch runs synchronously, with the host clock.

  Returns 'step_seconds' (one per timed step), 'optimizer' and 'peak_memory_bytes' (CUDA
  only, else None).
  """
  dev = device()
  # TF32 in float32 matmuls as well as convolutions, as JAX's default precision allows.
  torch.set_float32_matmul_precision('high')
  memory_format = torch.channels_last if channels_last else torch.contiguous_format
  net = net.to(dev, memory_format=memory_format).train()
  crop = config.data.crop_size
  images = torch.randn(batch, 3, crop, crop, device=dev).contiguous(memory_format=memory_format)
  labels = torch.randint(config.model.num_classes, (batch,), device=dev)
  kind = {'fused': True} if dev.type == 'cuda' else {'foreach': True}
  opt = torch.optim.SGD(net.parameters(), lr=config.optimizer.learning_rate,
                        momentum=config.optimizer.momentum,
                        weight_decay=config.optimizer.weight_decay, **kind)
  model = torch.compile(net) if compile_net else net

  def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
      loss = F.cross_entropy(model(images), labels)
    loss.backward()
    opt.step()

  for _ in range(warmup):
    step()
  if dev.type == 'cuda':
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    events = [torch.cuda.Event(enable_timing=True) for _ in range(steps + 1)]
    events[0].record()
    for event in events[1:]:
      step()
      event.record()
    torch.cuda.synchronize()
    seconds = [a.elapsed_time(b) / 1e3 for a, b in zip(events, events[1:])]
    peak = torch.cuda.max_memory_allocated()
  else:
    seconds, peak = [], None
    for _ in range(steps):
      start = time.perf_counter()
      step()
      seconds.append(time.perf_counter() - start)
  return {'step_seconds': seconds, 'optimizer': next(iter(kind)), 'peak_memory_bytes': peak}
