"""input_pipeline/fgxmedia/images.py: decoding to RGB and the square resize + centre crop."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from input_pipeline.fgxmedia import images
from input_pipeline.errors import DecodeError


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _rgb(seed=0, h=20, w=30):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_rgb_png_roundtrip():
    a = _rgb()
    got = images.decode_image(_encode(Image.fromarray(a), 'PNG'), source='x.png')
    np.testing.assert_array_equal(got, a)
    assert got.dtype == np.uint8 and got.shape == (20, 30, 3)


@pytest.mark.parametrize('mode,fmt', [('L', 'PNG'), ('L', 'JPEG'), ('CMYK', 'JPEG'),
                                      ('RGBA', 'PNG'), ('P', 'PNG'), ('LA', 'PNG')])
def test_modes_match_pil_conversion(mode, fmt):
    src = Image.fromarray(_rgb(1))
    if mode == 'P':
        img = src.quantize(16)
    elif mode == 'RGBA':
        img = src.copy()
        img.putalpha(Image.fromarray(_rgb(2)[..., 0]))
    else:
        img = src.convert(mode)
    data = _encode(img, fmt)
    # Reference: what the reference loader does, PIL's own convert('RGB') of the decoded file.
    ref = np.asarray(Image.open(io.BytesIO(data)).convert('RGB'))
    assert Image.open(io.BytesIO(data)).mode == mode      # the file really is in that mode
    got = images.decode_image(data, source=f'x.{fmt}')
    assert got.shape == (20, 30, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, ref)


def test_sixteen_bit_png_is_scaled_not_clipped():
    a16 = np.random.default_rng(3).integers(0, 65536, (10, 12), dtype=np.uint16)
    data = _encode(Image.fromarray(a16), 'PNG')
    got = images.decode_image(data, source='x16.png')
    ref = np.rint(a16 / 257.0).astype(np.uint8)            # 65535 -> 255 linearly
    for ch in range(3):
        np.testing.assert_array_equal(got[..., ch], ref)


@pytest.mark.parametrize('data', [b'', b'not an image at all',
                                  _encode(Image.fromarray(_rgb(4, 64, 64)), 'JPEG')[:300]])
def test_corrupt_bytes_raise_naming_source(data):
    with pytest.raises(DecodeError) as e:
        images.decode_image(data, source='birds/bad_0001.jpg')
    assert e.value.path == 'birds/bad_0001.jpg'
    assert str(e.value).startswith('birds/bad_0001.jpg: cannot decode image')


def _torch_resize(a: np.ndarray, size: int) -> np.ndarray:
    t = torch.from_numpy(a).permute(2, 0, 1)[None].double()
    r = torch.nn.functional.interpolate(t, size=(size, size), mode='bilinear',
                                        align_corners=False, antialias=True)
    return r[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize('h,w,resize,crop', [(90, 120, 72, 64), (40, 50, 72, 64),
                                             (200, 150, 128, 112), (64, 64, 64, 64)])
def test_resize_center_crop_against_torch(h, w, resize, crop):
    # A smooth image: PIL (fixed point, rounding to uint8) and torch (float) bilinear
    # with antialias agree to within ~1 grey level; noise would only add rounding, not
    # reveal a different kernel. A wrong kernel, size or offset moves values by >> 2.
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.stack([127 + 120 * np.sin(xx / 7.0), 127 + 120 * np.cos(yy / 5.0),
                  (xx * 255 // max(w - 1, 1))], -1).astype(np.uint8)
    got = images.resize_center_crop(a, resize, crop)
    assert got.shape == (crop, crop, 3) and got.dtype == np.uint8
    off = int(round((resize - crop) / 2))
    ref = _torch_resize(a, resize)[off:off + crop, off:off + crop]
    diff = np.abs(got.astype(np.float64) - ref)
    assert diff.max() <= 2.0, diff.max()
    assert diff.mean() <= 0.6, diff.mean()


def test_center_crop_offset_is_exact():
    a = _rgb(5, 72, 72)                      # already at the resize size: crop only
    np.testing.assert_array_equal(images.resize_center_crop(a, 72, 64), a[4:68, 4:68])
    b = _rgb(6, 73, 73)                      # odd margin: torchvision rounds half to even
    got = images.resize_center_crop(b, 73, 64)
    np.testing.assert_array_equal(got, b[4:68, 4:68])   # round(4.5) == 4


def test_resize_center_crop_rejects_bad_args():
    with pytest.raises(ValueError, match='crop_size'):
        images.resize_center_crop(_rgb(), 64, 72)
    with pytest.raises(ValueError, match='uint8'):
        images.resize_center_crop(_rgb().astype(np.float32), 72, 64)


def test_load_image(tmp_path):
    a = _rgb(7, 50, 60)
    p = tmp_path / 'x.png'
    Image.fromarray(a).save(p)
    ref = np.asarray(Image.fromarray(a).resize((40, 40), Image.Resampling.BILINEAR))[4:36, 4:36]
    np.testing.assert_array_equal(images.load_image(p, 40, 32), ref)
    with pytest.raises(DecodeError, match='cannot read'):
        images.load_image(tmp_path / 'missing.jpg', 40, 32)
