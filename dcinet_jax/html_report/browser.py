"""Render a report page in headless Chromium and check the picture is not blank.

Used by the tests and to make the README's screenshot. The flags keep Chromium off the
network and away from the user's profile: a throw-away profile folder, no GPU, no
sandbox (containers run as root), no background fetches (updates, sync, QUIC), so a
render on a closed machine neither waits on nor reaches anything outside the page.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

__all__ = ['BROWSERS', 'WINDOW', 'find_browser', 'non_blank_stats', 'render_png']

BROWSERS = ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable')
WINDOW = (1280, 2000)
_FLAGS = ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
          '--disable-background-networking', '--disable-component-update', '--disable-sync',
          '--hide-scrollbars', '--mute-audio')


def find_browser() -> str | None:
    """Path of the first Chromium-like browser on PATH, or None."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def render_png(html_path: str | Path, png_path: str | Path, *,
               window: tuple[int, int] = WINDOW, timeout_s: float = 60.0,
               browser: str | None = None) -> Path:
    """Screenshot of the page's first `window` pixels into png_path (RuntimeError naming
    the browser's last output lines when it writes no picture)."""
    browser = browser or find_browser()
    if browser is None:
        raise FileNotFoundError(f'no Chromium found on PATH (tried {", ".join(BROWSERS)})')
    html_path, png_path = Path(html_path).resolve(), Path(png_path).resolve()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    png_path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix='dcinet-chromium-') as profile:
        cmd = [browser, *_FLAGS, f'--user-data-dir={profile}', f'--screenshot={png_path}',
               f'--window-size={window[0]},{window[1]}', html_path.as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL)
    if not png_path.is_file():
        tail = '\n'.join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f'{Path(browser).name} wrote no screenshot (exit {proc.returncode}):'
                           f' {tail}')
    return png_path


def non_blank_stats(png_path: str | Path) -> dict[str, float]:
    """{'colours': distinct RGB colours, 'non_white': fraction of pixels that are not
    near-white}: a page that rendered text, tables and figures has thousands of colours
    and a few percent of non-white pixels; a blank or error page has a handful."""
    from PIL import Image
    with Image.open(png_path) as im:
        rgb = np.asarray(im.convert('RGB'))
    flat = rgb.reshape(-1, 3).astype(np.int64)
    colours = np.unique(flat[:, 0] << 16 | flat[:, 1] << 8 | flat[:, 2]).size
    non_white = float(np.mean(np.any(rgb < 240, axis=-1)))
    return {'colours': float(colours), 'non_white': non_white}
