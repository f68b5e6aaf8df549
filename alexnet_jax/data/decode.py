"""Turns stored image bytes into the paper's fixed-size uint8 RGB image, robustly.

One job: bytes in, `(size, size, 3)` uint8 out (§2: shorter side rescaled to `size`, then
the central square), or a `DecodeError` naming what went wrong. JPEGs go through
libjpeg-turbo (simplejpeg, the fastest decoder at hand); anything it refuses
(a PNG saved as .JPEG, CMYK variants it cannot convert, a JPEG with a recoverable defect)
falls back to Pillow, which also turns greyscale, palette and alpha images into RGB.
Truncated or undecodable data raises `DecodeError`: callers skip and count it.
"""

import io
import re

import numpy as np
from PIL import Image
import simplejpeg

# A truncated file must fail, not come back half grey.
Image.LOAD_TRUNCATED_IMAGES = False
_JPEG_START, _JPEG_END = b'\xff\xd8', b'\xff\xd9'


class DecodeError(ValueError):
  """The bytes are not a decodable image (truncated, corrupt or not an image)."""


def decode_image(data: bytes, *, channels: str = 'RGB', min_size: int = 0) -> np.ndarray:
  """Decodes an image file's bytes to uint8 `(h, w, 3)`.

  Args:
    data: the encoded file (JPEG, or anything Pillow reads).
    channels: 'RGB', or 'BGR' (the host augmentation flips a BGR image by reversing its
      rows of bytes, which restores RGB order; see augment.crop_flip_normalize).
    min_size: if > 0, the decoder may return a reduced-size image (JPEG DCT scaling by
      n/8) as long as both sides stay >= min_size: much cheaper for large photos that
      will be shrunk to min_size anyway.

  Returns:
    uint8 array `(h, w, 3)` in the requested channel order.

  Raises:
    DecodeError: if neither decoder can read the whole image.
  """
  if channels not in ('RGB', 'BGR'):
    raise ValueError(f"channels must be 'RGB' or 'BGR', got {channels!r}")
  if data[:2] == _JPEG_START:
    # A JPEG whose data is whole but whose end marker is missing decodes exactly once
    # the marker is restored; truncated data still fails (libjpeg finds it short).
    for attempt in (data, data + _JPEG_END) if not data.endswith(_JPEG_END) else (data,):
      try:
        return simplejpeg.decode_jpeg(
            attempt, colorspace=channels, min_height=min_size, min_width=min_size)
      except ValueError:
        pass  # Pillow below gets a second try (and the final word).
  try:
    with Image.open(io.BytesIO(data)) as pil:
      if min_size:
        pil.draft('RGB', (min_size, min_size))
      image = np.asarray(pil.convert('RGB'))
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    reason = re.sub(r' <_io\.BytesIO object at 0x[0-9a-f]+>', '', str(e))
    raise DecodeError(f'{type(e).__name__}: {reason}') from e
  return image[..., ::-1].copy() if channels == 'BGR' else image


def shorter_side(data: bytes) -> int | None:
  """The shorter side of the encoded image in pixels, from its header; None if unreadable."""
  try:
    with Image.open(io.BytesIO(data)) as pil:
      return min(pil.size)
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
    return None


def center_square_resize(image: np.ndarray, size: int) -> np.ndarray:
  """§2: rescales so that the shorter side is `size`, then takes the central square.

  Implemented as "central square of the original, resized to size x size" (one bicubic,
  antialiased resample; no rounding of the longer side). Works for either channel order.
  """
  h, w = image.shape[:2]
  if h == w == size:
    return image
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  box = (left, top, left + side, top + side)
  resized = Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC, box=box)
  return np.asarray(resized)


def decode_to_square(data: bytes, size: int, *, channels: str = 'RGB') -> np.ndarray:
  """`decode_image` then `center_square_resize`: uint8 `(size, size, 3)`."""
  return center_square_resize(
      decode_image(data, channels=channels, min_size=size), size)


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
  """Encodes a uint8 RGB `(h, w, 3)` image as baseline JPEG at `quality` (1-100).

  Chroma is subsampled 4:2:0 as by most photo encoders (and the ILSVRC originals): smaller
  files that decode faster than 4:4:4's.
  """
  return simplejpeg.encode_jpeg(np.ascontiguousarray(image), quality=quality,
                                colorspace='RGB', colorsubsampling='420')
