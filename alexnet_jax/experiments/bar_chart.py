"""Grouped bar charts as PNG files, drawn with Pillow alone (no plotting library needed).

One panel per quantity (say top-1 and top-5 error), stacked; in each panel a group of
bars per category (say an ablation), one bar per series (say measured and the paper's),
each labelled with its text, an optional whisker per bar (say a confidence interval,
named in the legend), and a zero line. A series without a number for a category draws no
bar, only its label, on the zero line.
"""

import dataclasses
import math

from PIL import Image, ImageDraw, ImageFont

_COLOURS = ((47, 111, 176), (230, 138, 41), (96, 160, 80), (170, 80, 160))
_WHISKER = (20, 20, 20)
_GRID = (238, 238, 238)
_TEXT = (30, 30, 30)
_LEFT, _RIGHT, _TOP = 64, 24, 64  # Margins (pixels): y tick labels, right edge, title + legend.
_BAR, _GAP = 60, 36  # A bar's width, and the space between two groups.
_PANEL_TITLE, _PLOT, _GROUP_LABELS = 26, 240, 40  # A panel's parts, top to bottom.


@dataclasses.dataclass(frozen=True)
class Panel:
  """One quantity: for each series, a value (None: no bar), a label and optionally a
  whisker (low, high) per group."""
  title: str
  values: dict[str, list[float | None]]
  labels: dict[str, list[str]]
  whiskers: dict[str, list[tuple[float, float] | None]] = dataclasses.field(
      default_factory=dict)  # Series -> per group (low, high), or None: no whisker.


def _font(size: int):
  return ImageFont.load_default(size=size)


def _tick_step(span: float) -> float:
  """A round step (1, 2 or 5 times a power of ten) giving about six ticks over span."""
  raw = span / 6
  power = 10 ** math.floor(math.log10(raw))
  return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _limits(panel: Panel) -> tuple[float, float]:
  """The y range: every value, every whisker and zero, with room for the labels."""
  numbers = [v for vs in panel.values.values() for v in vs if v is not None] + [0.0]
  numbers += [end for ws in panel.whiskers.values() for w in ws if w for end in w]
  low, high = min(numbers), max(numbers)
  pad = max(high - low, 1.0) * 0.18
  return low - pad, high + pad


def _draw_whisker(draw: ImageDraw.ImageDraw, x: float, y_low: float, y_high: float) -> None:
  """A vertical line with caps at both ends."""
  cap = _BAR / 6
  draw.line([(x, y_low), (x, y_high)], fill=_WHISKER, width=2)
  for end in (y_low, y_high):
    draw.line([(x - cap, end), (x + cap, end)], fill=_WHISKER, width=2)


def _draw_panel(draw: ImageDraw.ImageDraw, panel: Panel, groups: list[str], series: list[str],
                top: int, width: int) -> None:
  font, small = _font(14), _font(12)
  draw.text((_LEFT, top + 4), panel.title, fill=_TEXT, font=font)
  plot_top, plot_bottom = top + _PANEL_TITLE, top + _PANEL_TITLE + _PLOT
  right = width - _RIGHT
  low, high = _limits(panel)

  def y(value: float) -> float:
    return plot_bottom - (value - low) / (high - low) * _PLOT

  step = _tick_step(high - low)
  tick = math.ceil(low / step) * step
  while tick <= high:
    draw.line([(_LEFT, y(tick)), (right, y(tick))], fill=_GRID)
    draw.text((_LEFT - 6, y(tick)), f'{tick:+g}' if tick else '0', fill=_TEXT, font=small,
              anchor='rm')
    tick += step
  draw.line([(_LEFT, y(0)), (right, y(0))], fill=_TEXT, width=1)
  draw.rectangle([(_LEFT, plot_top), (right, plot_bottom)], outline=(160, 160, 160))
  group_width = _BAR * len(series) + _GAP
  for g, group in enumerate(groups):
    x0 = _LEFT + _GAP / 2 + g * group_width
    for s, name in enumerate(series):
      left, value, label = x0 + s * _BAR, panel.values[name][g], panel.labels[name][g]
      middle = left + _BAR / 2
      if value is None:
        draw.text((middle, y(0) - 3), label, fill=_COLOURS[s], font=small, anchor='md')
        continue
      draw.rectangle([(left + 3, min(y(0), y(value))), (left + _BAR - 3, max(y(0), y(value)))],
                     fill=_COLOURS[s])
      whisker = panel.whiskers.get(name, [None] * len(groups))[g]
      ends = [value]
      if whisker:
        ends += whisker
        _draw_whisker(draw, middle, y(whisker[0]), y(whisker[1]))
      if value >= 0:  # The label clear of the bar and its whisker.
        draw.text((middle, y(max(ends)) - 3), label, fill=_TEXT, font=small, anchor='md')
      else:
        draw.text((middle, y(min(ends)) + 3), label, fill=_TEXT, font=small, anchor='ma')
    draw.text((x0 + _BAR * len(series) / 2, plot_bottom + 8), group, fill=_TEXT, font=font,
              anchor='ma')


def draw(path: str, title: str, groups: list[str], series: list[str],
         panels: list[Panel], whisker_label: str = '') -> tuple[int, int]:
  """Writes the chart as a PNG at `path`; returns its (width, height) in pixels. The
  legend names the series, and the whiskers when `whisker_label` is given."""
  width = max(520, _LEFT + _RIGHT + len(groups) * (_BAR * len(series) + _GAP))
  panel_height = _PANEL_TITLE + _PLOT + _GROUP_LABELS
  height = _TOP + len(panels) * panel_height
  image = Image.new('RGB', (width, height), 'white')
  canvas = ImageDraw.Draw(image)
  canvas.text((_LEFT, 10), title, fill=_TEXT, font=_font(15))
  x = _LEFT
  for s, name in enumerate(series):  # The legend.
    canvas.rectangle([(x, 38), (x + 14, 52)], fill=_COLOURS[s])
    canvas.text((x + 20, 45), name, fill=_TEXT, font=_font(13), anchor='lm')
    x += 40 + int(canvas.textlength(name, font=_font(13)))
  if whisker_label:
    _draw_whisker(canvas, x + 7, 52, 38)
    canvas.text((x + 20, 45), whisker_label, fill=_TEXT, font=_font(13), anchor='lm')
  for p, panel in enumerate(panels):
    _draw_panel(canvas, panel, groups, series, _TOP + p * panel_height, width)
  image.save(path, format='PNG')
  return width, height
