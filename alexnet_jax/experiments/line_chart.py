"""A line chart as a PNG, drawn with Pillow alone: axes with ticks and labels, solid and
dashed lines, dotted reference lines and a legend (the paper's figures are line plots)."""

import dataclasses
import math
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

_DASH, _GAP = 12, 7  # Pixels on and off along a dashed line.
_MARGIN = {'left': 90, 'right': 50, 'top': 50, 'bottom': 70}


@dataclasses.dataclass(frozen=True)
class Series:
  """One line; series that share a label share one legend entry."""
  label: str
  x: Sequence[float]
  y: Sequence[float]
  color: tuple[int, int, int]
  dashed: bool = False


def nice_step(span: float, most_ticks: int = 10) -> float:
  """The smallest of 1, 2, 5 x 10^k that puts at most `most_ticks` intervals on `span`."""
  power = 10.0 ** math.floor(math.log10(span / most_ticks))
  return next(m * power for m in (1, 2, 5, 10) if span / (m * power) <= most_ticks)


def _dashed(draw: ImageDraw.ImageDraw, points: list[tuple[float, float]], color, width: int,
            dash: int = _DASH, gap: int = _GAP) -> None:
  """A polyline drawn dashed; the pattern runs on across its vertices."""
  phase = 0.0  # Distance into the current dash + gap period.
  for (x0, y0), (x1, y1) in zip(points, points[1:]):
    length = math.hypot(x1 - x0, y1 - y0)
    done = 0.0
    while done < length:
      on = phase < dash
      step = min((dash if on else dash + gap) - phase, length - done)
      if on:
        a, b = done / length, (done + step) / length
        draw.line([(x0 + a * (x1 - x0), y0 + a * (y1 - y0)),
                   (x0 + b * (x1 - x0), y0 + b * (y1 - y0))], fill=color, width=width)
      done += step
      phase = (phase + step) % (dash + gap)


def draw(path: str, series: Sequence[Series], *, x_max: float, y_max: float, x_label: str,
         y_label: str, title: str, hlines: Sequence[tuple[float, str]] = (),
         size: tuple[int, int] = (800, 560)) -> None:
  """Writes the chart of `series` over [0, x_max] x [0, y_max] to `path` (PNG).

  `hlines`: (y, label) pairs drawn as grey dotted lines across the plot, labelled in the
  right margin (e.g. the 25% threshold of Figure 1).
  """
  width, height = size
  image = Image.new('RGB', size, 'white')
  ink = ImageDraw.Draw(image)
  font = ImageFont.load_default(size=15)
  left, right = _MARGIN['left'], width - _MARGIN['right']
  top, bottom = _MARGIN['top'], height - _MARGIN['bottom']
  to_px = lambda x, y: (left + x / x_max * (right - left), bottom - y / y_max * (bottom - top))

  for y, label in hlines:
    _, py = to_px(0, y)
    _dashed(ink, [(left, py), (right, py)], (150, 150, 150), 1, dash=2, gap=4)
    ink.text((right + 4, py), label, fill=(110, 110, 110), font=font, anchor='lm')
  ink.rectangle([left, top, right, bottom], outline='black', width=1)
  for axis, span in (('x', x_max), ('y', y_max)):
    step = nice_step(span)
    for k in range(int(span / step + 1e-9) + 1):
      value = k * step
      text = f'{value:g}'
      if axis == 'x':
        px, _ = to_px(value, 0)
        ink.line([(px, bottom), (px, bottom + 6)], fill='black')
        ink.text((px, bottom + 9), text, fill='black', font=font, anchor='mt')
      else:
        _, py = to_px(0, value)
        ink.line([(left - 6, py), (left, py)], fill='black')
        ink.text((left - 9, py), text, fill='black', font=font, anchor='rm')
  ink.text(((left + right) / 2, height - 12), x_label, fill='black', font=font, anchor='mb')
  ink.text((width / 2, 14), title, fill='black', font=font, anchor='mt')
  y_text = Image.new('RGB', (int(ink.textlength(y_label, font=font)) + 4, 20), 'white')
  ImageDraw.Draw(y_text).text((2, 2), y_label, fill='black', font=font)
  rotated = y_text.rotate(90, expand=True)
  image.paste(rotated, (12, int((top + bottom - rotated.height) / 2)))

  for s in series:
    points = [to_px(x, y) for x, y in zip(s.x, s.y)]
    if len(points) == 1:  # A one-epoch curve: a dot.
      ink.circle(points[0], 3, fill=s.color)
    elif s.dashed:
      _dashed(ink, points, s.color, 2)
    else:
      ink.line(points, fill=s.color, width=2, joint='curve')
  _legend(ink, font, series, right, top)
  image.save(path, format='PNG')


def _legend(ink: ImageDraw.ImageDraw, font, series: Sequence[Series], right: float,
            top: float) -> None:
  """Top right of the plot, on white: each label once, after a stretch of its line."""
  legend = {}
  for s in series:
    legend.setdefault(s.label, s)
  if not legend:
    return
  text_width = max(ink.textlength(label, font=font) for label in legend)
  x0, y0 = right - text_width - 78, top + 8
  ink.rectangle([x0, y0, right - 8, y0 + 24 * len(legend) + 8], fill='white',
                outline=(180, 180, 180))
  for row, s in enumerate(legend.values()):
    y = y0 + 16 + 24 * row
    sample = [(x0 + 10, y), (x0 + 60, y)]
    if s.dashed:
      _dashed(ink, sample, s.color, 2)
    else:
      ink.line(sample, fill=s.color, width=2)
    ink.text((x0 + 68, y), s.label, fill='black', font=font, anchor='lm')
