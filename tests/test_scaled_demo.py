"""`dcinet demo-data --scale F`: the releases' counts times F, real file kinds and sizes,
and folders that `dcinet data check` passes against their own manifests."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from input_pipeline.demo import scaled

REPO = Path(__file__).resolve().parents[1]
# Typed in from the releases' documentation, independently of the code's manifests.
FGX = {'image': (5994, 5794), 'text': (4000, 4000), 'audio': (6000, 6000),
       'video': (12666, 5684)}


def _cli(*args):
    return subprocess.run([sys.executable, '-m', 'dcinet_jax', *args], capture_output=True,
                          text=True, cwd=REPO)


def _check(config, root):
    out = _cli('data', 'check', '--config', config, f'--config.data_dir={root}', '--deep',
               '--json')
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    return json.loads(out.stdout)


def test_parse_scale():
    assert scaled.parse_scale('full') == 1.0 and scaled.parse_scale('0.01') == 0.01
    for bad in ('0', '2', 'half', '-0.1'):
        with pytest.raises(ValueError, match='--scale'):
            scaled.parse_scale(bad)
    assert list(scaled.spread(5, 2)) == [0, 0, 0, 1, 1]


def test_fgxmedia_at_a_fraction(tmp_path):
    out = _cli('demo-data', '--scale', '0.002', '--out', str(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    rep = _check('configs/test.py', tmp_path)
    found = {(c['group'], c['split']): c['found'] for c in rep['counts']}
    for m, (tr, te) in FGX.items():
        assert found[(m, 'train')] == max(1, round(tr * 0.002))
        assert found[(m, 'test')] == max(1, round(te * 0.002))
    modes = {Image.open(p).mode for p in (tmp_path / 'image').rglob('*.jpg')}
    assert {'RGB', 'L', 'CMYK'} <= modes
    png = Image.open(next((tmp_path / 'audio/audioimg').rglob('*.png')))
    assert png.mode == 'RGBA' and png.size == (700, 700)
    lines = (tmp_path / 'list/video/train.txt').read_text().splitlines()
    per_video = {}
    for ln in lines:
        vid = ln.rsplit(' ', 1)[0][:-6]
        per_video[vid] = per_video.get(vid, 0) + 1
    assert len(per_video) == 25 and max(per_video.values()) == 25
    photo = next((tmp_path / 'image').rglob('*.jpg'))
    assert 20_000 < photo.stat().st_size < 200_000        # photo-sized JPEGs
    assert (tmp_path / 'text').rglob('*.txt') and all(
        len(p.read_text()) > 200 for p in (tmp_path / 'text').rglob('*.txt'))


def test_precomp_and_av_at_a_fraction(tmp_path):
    out = _cli('demo-data', '--format', 'precomp', '--scale', '0.001', '--out',
               str(tmp_path / 'pc'))
    assert out.returncode == 0, out.stderr[-2000:]
    ims = np.load(tmp_path / 'pc/train_ims.npy', mmap_mode='r')
    assert ims.shape == (29, 36, 2048) and ims.dtype == np.float32
    rep = _check('configs/hslm_test.py', tmp_path / 'pc')
    assert {(c['group'], c['split']): c['found'] for c in rep['counts']} == {
        ('images', 'train'): 29, ('captions', 'train'): 145, ('images', 'dev'): 1,
        ('captions', 'dev'): 5, ('images', 'test'): 1, ('captions', 'test'): 5}
    out = _cli('demo-data', '--format', 'vegas', '--scale', '0.01', '--out',
               str(tmp_path / 'av'))
    assert out.returncode == 0, out.stderr[-2000:]
    rep = _check('configs/dsffn_test.py', tmp_path / 'av')
    assert [c['found'] for c in rep['counts']] == [225, 56]      # 22,482 and 5,621 x 0.01
