"""Image bytes → RGB uint8 arrays, and the square resize + centre crop (`docs/data.md#resize-and-centre-crop`).

Decoding mirrors the reference `PIL.Image.open(f).convert('RGB')`: grayscale and
palette images are expanded, CMYK uses PIL's conversion, alpha is dropped (not
composited). 16-bit images, which `convert('RGB')` would clip, are scaled to 8 bits.
EXIF orientation is not applied, as in the reference loader.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image

from input_pipeline.errors import DecodeError
from input_pipeline.spec import center_offset

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.tif', '.tiff', '.webp')

_SIXTEEN_BIT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I')


def decode_image(data: bytes, *, source: str) -> np.ndarray:
    """Decode JPEG/PNG/... bytes to uint8[H, W, 3] RGB.

    `source` (usually the file path) names the culprit in the DecodeError raised for
    corrupt, truncated or unsupported data.
    """
    return decode_image_kind(data, source=source)[0]


def decode_image_kind(data: bytes, *, source: str) -> tuple[np.ndarray, str]:
    """`decode_image`, plus what the file was: '<PIL format>/<PIL mode>', e.g.
    'JPEG/RGB', 'JPEG/L', 'JPEG/CMYK', 'PNG/RGBA'. `dcinet prepare` keeps a source's
    own bytes only for 'JPEG/RGB' (`is_plain_rgb_jpeg`), so it needs to know."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            img.load()
            return _to_rgb(img), f'{img.format}/{img.mode}'
    except DecodeError:
        raise
    except Image.UnidentifiedImageError:
        raise DecodeError(source, 'cannot decode image: not a known image format') from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, EOFError) as e:
        raise DecodeError(source, f'cannot decode image: {e}') from None


def is_plain_rgb_jpeg(kind: str, shape: tuple[int, ...], max_side: int) -> bool:
    """True for a decoded 8-bit 3-channel JPEG (baseline or progressive; PIL's 'RGB'
    mode is 8 bits per channel) with neither side above `max_side`: one the training
    input can decode and upscale itself, so its bytes can be stored as they are."""
    return kind == 'JPEG/RGB' and len(shape) == 3 and max(shape[:2]) <= max_side


def read_image_file(path: str | os.PathLike) -> bytes:
    """The bytes of an image file; DecodeError naming it when unreadable or empty."""
    path = os.fspath(path)
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as e:
        raise DecodeError(path, f'cannot read image file: {e.strerror or e}') from None
    if not data:
        raise DecodeError(path, 'file is empty (0 bytes)')
    return data


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode == 'RGB':
        return np.asarray(img, np.uint8).copy()
    if img.mode in _SIXTEEN_BIT_MODES:
        # 16-bit grayscale (PNG): map 0..65535 to 0..255 instead of clipping at 255.
        a = np.asarray(img).astype(np.float64)
        a = np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=-1)
    if img.mode == 'F':
        a = np.clip(np.rint(np.asarray(img, np.float64)), 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=-1)
    return np.asarray(img.convert('RGB'), np.uint8).copy()


def resize_center_crop(img: np.ndarray, resize_size: int, crop_size: int) -> np.ndarray:
    """Resize to resize_size x resize_size, then cut the centre crop_size square.

    Bilinear resampling with PIL, i.e. what torchvision's `Resize((s, s))` does on a
    PIL image (antialiased when shrinking); the crop offset follows `CenterCrop`.
    """
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f'expected uint8[H, W, 3], got {img.dtype}{list(img.shape)}')
    if not 0 < crop_size <= resize_size:
        raise ValueError(f'need 0 < crop_size <= resize_size, got crop {crop_size}, '
                         f'resize {resize_size}')
    if img.shape[:2] != (resize_size, resize_size):
        img = np.asarray(Image.fromarray(img).resize((resize_size, resize_size),
                                                     Image.Resampling.BILINEAR))
    o = center_offset(resize_size, crop_size)
    return np.ascontiguousarray(img[o:o + crop_size, o:o + crop_size])


def load_image(path: str | os.PathLike, resize_size: int, crop_size: int) -> np.ndarray:
    """Read, decode, resize and centre-crop one image file: uint8[crop, crop, 3]."""
    path = os.fspath(path)
    return resize_center_crop(decode_image(read_image_file(path), source=path),
                              resize_size, crop_size)
