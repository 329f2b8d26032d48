"""Small files that show a test item on the report page.

An item's payload is what `input_pipeline.fgxmedia.items.read_items` returns: the stored JPEG
bytes of an image or audio spectrogram, the list of frame JPEGs of a video, or the
decoded text of a text item. Images and spectrograms become a JPEG at most THUMB_PX on a
side; a video becomes one strip of up to VIDEO_KEYFRAMES evenly spaced frames (first to
last); a text becomes a snippet of its first SNIPPET_CHARS characters, shown as HTML
text (the page escapes it), not as an image.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = ['SNIPPET_CHARS', 'THUMB_PX', 'VIDEO_KEYFRAMES', 'Thumbnail', 'make_thumbnail']

THUMB_PX = 112
VIDEO_KEYFRAMES = 3
SNIPPET_CHARS = 160
_JPEG_QUALITY = 85


class Thumbnail:
    """How the page shows one item: `image` (a path relative to the page) or `text`."""

    def __init__(self, *, image: str | None = None, text: str | None = None):
        self.image, self.text = image, text


def make_thumbnail(modality: str, payload: Any, out_dir: Path, name: str,
                   relative_to: Path) -> Thumbnail:
    """Writes `out_dir/name.jpg` for image, audio and video payloads (returned as a
    path relative to `relative_to`); a text payload becomes a snippet."""
    if modality == 'text':
        return Thumbnail(text=_snippet(payload))
    if modality == 'video':
        frames = [_decode(f, name) for f in payload]
        if not frames:
            raise ValueError(f'thumbnail {name}: the video has no frames')
        keep = np.unique(np.round(np.linspace(0, len(frames) - 1,
                                              min(VIDEO_KEYFRAMES, len(frames)))).astype(int))
        picture = _strip([frames[i] for i in keep])
    else:
        picture = _decode(payload, name)
        picture.thumbnail((THUMB_PX, THUMB_PX))
    path = Path(out_dir) / f'{name}.jpg'
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.convert('RGB').save(path, 'JPEG', quality=_JPEG_QUALITY)
    return Thumbnail(image=path.relative_to(relative_to).as_posix())


def _decode(data: bytes, name: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as e:  # noqa: BLE001 - any decoder failure is the same bad item
        raise ValueError(f'thumbnail {name}: cannot decode the stored image: {e}') from None
    return image.convert('RGB')


def _strip(frames: list[Image.Image]) -> Image.Image:
    """The frames side by side, each scaled to THUMB_PX high, 2 px apart."""
    scaled = []
    for frame in frames:
        frame = frame.copy()
        frame.thumbnail((THUMB_PX, THUMB_PX))
        scaled.append(frame)
    width = sum(f.width for f in scaled) + 2 * (len(scaled) - 1)
    strip = Image.new('RGB', (width, max(f.height for f in scaled)), 'white')
    x = 0
    for frame in scaled:
        strip.paste(frame, (x, 0))
        x += frame.width + 2
    return strip


def _snippet(text: str) -> str:
    text = ' '.join(str(text).split())
    return text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS - 1] + '…'
