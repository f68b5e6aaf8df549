"""Tests for alexnet_jax/data/decode.py: odd formats become RGB, broken files raise, §2 resize."""

import io
import struct
import zlib

import numpy as np
from PIL import Image, ImageOps
import pytest

from alexnet_jax.data import decode


def _encode(image: np.ndarray, fmt: str = 'JPEG', mode: str | None = None, **kw) -> bytes:
  pil = Image.fromarray(image)
  if mode:
    pil = pil.convert(mode)
  buf = io.BytesIO()
  pil.save(buf, fmt, **kw)
  return buf.getvalue()


def _smooth(h: int, w: int) -> np.ndarray:
  """A smooth colour gradient (JPEG keeps it close)."""
  yy, xx = np.mgrid[0:h, 0:w]
  return np.stack([yy * 200 // h + 20, xx * 200 // w + 30,
                   np.full((h, w), 90)], -1).astype(np.uint8)


def test_rgb_jpeg_roundtrip_and_bgr_order():
  image = _smooth(37, 53)
  data = decode.encode_jpeg(image, 95)
  rgb = decode.decode_image(data)
  assert rgb.shape == (37, 53, 3) and rgb.dtype == np.uint8
  assert np.abs(rgb.astype(int) - image).mean() < 3
  np.testing.assert_array_equal(decode.decode_image(data, channels='BGR'), rgb[..., ::-1])


def test_greyscale_jpeg_becomes_rgb():
  grey = _smooth(40, 30)[..., 0]
  rgb = decode.decode_image(_encode(grey))
  assert rgb.shape == (40, 30, 3)
  np.testing.assert_array_equal(rgb[..., 0], rgb[..., 1])
  assert np.abs(rgb[..., 0].astype(int) - grey).mean() < 3


def test_cmyk_jpeg_becomes_rgb():
  image = _smooth(31, 45)
  rgb = decode.decode_image(_encode(image, mode='CMYK'))
  assert rgb.shape == (31, 45, 3)
  assert np.abs(rgb.astype(int) - image).mean() < 6


def test_png_saved_as_jpeg_decodes_exactly():
  image = _smooth(20, 25)
  rgba = np.concatenate([image, np.full((20, 25, 1), 255, np.uint8)], -1)
  for data in (_encode(image, 'PNG'), _encode(rgba, 'PNG')):
    np.testing.assert_array_equal(decode.decode_image(data), image)
    np.testing.assert_array_equal(decode.decode_image(data, channels='BGR'),
                                  image[..., ::-1])


@pytest.mark.parametrize('data', [
    decode.encode_jpeg(_smooth(64, 64), 90)[:400],  # Truncated.
    _encode(_smooth(16, 16), 'PNG')[:60],  # Truncated PNG.
    b'\xff\xd8 not really a jpeg',
    b'',
])
def test_undecodable_raises_decode_error(data):
  with pytest.raises(decode.DecodeError):
    decode.decode_image(data)


def test_center_square_resize_keeps_the_central_square():
  # 200 x 300: the central square is columns 50..249; mark the outside red.
  image = np.zeros((200, 300, 3), np.uint8)
  image[:, :50] = image[:, 250:] = (255, 0, 0)
  image[:, 50:250] = (0, 200, 0)
  out = decode.center_square_resize(image, 256)
  assert out.shape == (256, 256, 3)
  inner = out[:, 3:-3].astype(int)  # Bicubic support reaches ~2 px past the square.
  assert inner[..., 0].max() <= 2 and inner[..., 1].min() >= 198
  # A tall image keeps its central rows.
  tall = np.zeros((90, 30, 3), np.uint8)
  tall[30:60] = 255
  np.testing.assert_array_equal(decode.center_square_resize(tall, 30), tall[30:60])


def test_decode_to_square_any_shape_and_reduced_decode():
  data = decode.encode_jpeg(_smooth(1100, 700), 90)
  # min_size lets libjpeg-turbo scale by n/8 (here 3/8): both sides stay >= 256.
  reduced = decode.decode_image(data, min_size=256)
  assert min(reduced.shape[:2]) >= 256 and reduced.shape[0] < 1100
  out = decode.decode_to_square(data, 256)
  assert out.shape == (256, 256, 3)
  full = decode.center_square_resize(decode.decode_image(data), 256)
  assert np.abs(out.astype(int) - full).mean() < 2
  assert decode.decode_to_square(decode.encode_jpeg(_smooth(20, 33), 90), 72).shape == (
      72, 72, 3)


def test_a_jpeg_missing_only_its_end_marker_decodes_exactly():
  image = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
  data = decode.encode_jpeg(image, 90)
  assert data.endswith(b'\xff\xd9')
  np.testing.assert_array_equal(decode.decode_image(data[:-2]), decode.decode_image(data))
  with pytest.raises(decode.DecodeError, match='truncated'):
    decode.decode_image(data[:len(data) // 2])  # Missing data is still refused.
  assert decode.shorter_side(data) == 48


def test_decode_errors_name_no_python_objects():
  with pytest.raises(decode.DecodeError) as e:
    decode.decode_image(b'not an image at all')
  assert 'cannot identify image file' in str(e.value) and 'BytesIO' not in str(e.value)


def _with_orientation(image: np.ndarray, fmt: str, orientation: int) -> bytes:
  pil = Image.fromarray(image)
  exif = pil.getexif()
  exif[0x0112] = orientation  # EXIF Orientation.
  buf = io.BytesIO()
  pil.save(buf, fmt, exif=exif.tobytes(), quality=95)
  return buf.getvalue()


@pytest.mark.parametrize('fmt', ['JPEG', 'PNG'])
@pytest.mark.parametrize('orientation', range(1, 9))
def test_exif_orientation_shows_the_photo_upright(fmt, orientation):
  """A camera's sideways or mirrored photo is seen as any viewer shows it (Pillow's
  exif_transpose is the reference), by both decoders and in the BGR order too."""
  blocks = np.random.default_rng(orientation).integers(0, 256, (4, 6, 3), dtype=np.uint8)
  image = np.kron(blocks, np.ones((10, 10, 1), np.uint8))  # 40 x 60, JPEG keeps blocks.
  data = _with_orientation(image, fmt, orientation)
  expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert('RGB'))
  got = decode.decode_image(data)
  assert got.shape == expected.shape == ((60, 40, 3) if orientation >= 5 else (40, 60, 3))
  assert np.abs(got.astype(int) - expected).mean() < 1
  np.testing.assert_array_equal(decode.decode_image(data, channels='BGR'), got[..., ::-1])
  assert decode.decode_to_square(data, 20).shape == (20, 20, 3)


def _saved(array: np.ndarray, fmt: str, mode: str | None = None) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(array, mode).save(buf, fmt)
  return buf.getvalue()


RAMP_16 = np.tile(np.array([0, 257 * 64, 257 * 128, 65535], np.uint16), (4, 1))


@pytest.mark.parametrize('data,mode', [
    (_saved(RAMP_16, 'PNG'), 'I;16'),  # 16-bit greyscale PNG (was stored solid white).
    (_saved(RAMP_16, 'TIFF'), 'I;16'),
    (_saved(RAMP_16.astype(np.int32), 'TIFF'), 'I'),  # 32-bit integers holding 16 bits.
    (_saved(RAMP_16.astype(np.float32) / 65535, 'TIFF'), 'F'),  # Floats on [0, 1].
])
def test_high_bit_depth_greyscale_is_scaled_to_8_bits_not_clipped(data, mode):
  assert Image.open(io.BytesIO(data)).mode == mode
  image = decode.decode_image(data)
  np.testing.assert_array_equal(image[0, :, 0], [0, 64, 128, 255])
  np.testing.assert_array_equal(image[..., 0], image[..., 2])


def _png_rgb48(image16: np.ndarray) -> bytes:
  """A 16-bit-per-channel RGB PNG (Pillow cannot write one), chunk by chunk."""
  h, w, _ = image16.shape

  def chunk(kind: bytes, body: bytes) -> bytes:
    return (struct.pack('>I', len(body)) + kind + body
            + struct.pack('>I', zlib.crc32(kind + body)))

  rows = b''.join(b'\x00' + row.astype('>u2').tobytes() for row in image16)
  return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 16, 2, 0, 0, 0))
          + chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b''))


def test_alpha_and_16_bit_colour_keep_their_colours():
  image = _smooth(12, 16)
  rgba = np.concatenate([image, np.full((12, 16, 1), 128, np.uint8)], -1)
  np.testing.assert_array_equal(decode.decode_image(_saved(rgba, 'PNG')), image)
  np.testing.assert_array_equal(
      decode.decode_image(_png_rgb48(image.astype(np.uint16) * 257)), image)
