"""Turns stored image bytes into the paper's fixed-size uint8 RGB image, robustly.

One job: bytes in, `(size, size, 3)` uint8 out (§2: shorter side rescaled to `size`, then
the central square), or a `DecodeError` naming what went wrong. JPEGs go through
libjpeg-turbo (simplejpeg, the fastest decoder at hand); anything it refuses
(a PNG saved as .JPEG, CMYK variants it cannot convert, a JPEG with a recoverable defect)
falls back to Pillow, which also turns greyscale, palette and alpha images into RGB, and
16-bit and float images into 8 bits by scaling their range (Pillow's own conversion clips
them: a 16-bit greyscale PNG came out white). A camera's EXIF orientation is applied, so
that a photo stored sideways is seen upright, as any viewer shows it. Truncated or
undecodable data raises `DecodeError`: callers skip and count it.
"""

import io
import re

import numpy as np
from PIL import Image
import simplejpeg

# A truncated file must fail, not come back half grey.
Image.LOAD_TRUNCATED_IMAGES = False
_JPEG_START, _JPEG_END = b'\xff\xd8', b'\xff\xd9'
# EXIF sits in an APP1 segment of at most 64 KB near a JPEG's start; only files that have
# one are opened a second time to read the orientation tag.
_EXIF, _EXIF_WITHIN = b'Exif\x00\x00', 1 << 17
_ORIENTATION_TAG = 0x0112
# EXIF orientation -> (swap rows and columns, then reverse the rows, the columns) to show
# the image upright: 2-4 mirrored or upside down, 5-8 stored on its side.
_UPRIGHT = {2: (False, False, True), 3: (False, True, True), 4: (False, True, False),
            5: (True, False, False), 6: (True, False, True), 7: (True, True, True),
            8: (True, True, False)}
_HIGH_BIT_DEPTH = ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I', 'F')


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
        image = simplejpeg.decode_jpeg(
            attempt, colorspace=channels, min_height=min_size, min_width=min_size)
      except ValueError:
        continue  # Pillow below gets a second try (and the final word).
      return _upright(image, _jpeg_orientation(data))
  try:
    with Image.open(io.BytesIO(data)) as pil:
      if min_size:
        pil.draft('RGB', (min_size, min_size))
      image = _to_rgb(pil)
      orientation = pil.getexif().get(_ORIENTATION_TAG, 1)
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    reason = re.sub(r' <_io\.BytesIO object at 0x[0-9a-f]+>', '', str(e))
    raise DecodeError(f'{type(e).__name__}: {reason}') from e
  image = _upright(image, orientation)
  return image[..., ::-1].copy() if channels == 'BGR' else image


def _to_rgb(pil: Image.Image) -> np.ndarray:
  """uint8 RGB; 16-bit and float greyscale scaled from their full range, not clipped."""
  if pil.mode not in _HIGH_BIT_DEPTH:
    return np.asarray(pil.convert('RGB'))
  values = np.asarray(pil, np.float64)
  if pil.mode == 'F':  # Floats: on [0, 1] as image tools write them.
    top = 1.0 if values.max(initial=0) <= 1 else 255.0
  else:  # 'I' holds 16-bit files too (PNG, TIFF); wider values use the 32-bit range.
    top = 65535.0 if values.max(initial=0) <= 65535 else 2.0 ** 32 - 1
  grey = np.clip(np.rint(values * (255 / top)), 0, 255).astype(np.uint8)
  return np.repeat(grey[..., None], 3, axis=-1)


def _jpeg_orientation(data: bytes) -> int:
  """The EXIF orientation tag of a JPEG (1, upright, when it has none)."""
  if data.find(_EXIF, 0, _EXIF_WITHIN) < 0:
    return 1
  try:
    with Image.open(io.BytesIO(data)) as pil:
      return pil.getexif().get(_ORIENTATION_TAG, 1)
  except (OSError, ValueError, SyntaxError):
    return 1  # Unreadable EXIF: the pixels decoded, shown as stored.


def _upright(image: np.ndarray, orientation: int) -> np.ndarray:
  """The image as its EXIF orientation says it is seen."""
  if orientation not in _UPRIGHT:
    return image
  swap, rows, columns = _UPRIGHT[orientation]
  if swap:
    image = image.transpose(1, 0, 2)
  return np.ascontiguousarray(image[::-1 if rows else 1, ::-1 if columns else 1])


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
