"""A generated stand-in for PKU FG-XMedia, in the exact on-disk layout (`docs/data.md`).

The real data set cannot be shipped, so this module draws a small one whose classes
are learnable in every modality with fine-grained differences between neighbouring
classes, and whose files exercise the awkward cases of the real release:

- image/<class folder>/*.jpg: a bird-like shape whose body hue (a ladder over the
  colour wheel), wing stripe count and crest encode the class, with pose jitter
  (position, size, rotation, facing), background clutter and pixel noise. A few are
  grayscale JPEGs, one is a CMYK JPEG and one a PNG with alpha. Sizes vary.
- audio/<class folder>/*.wav|flac|ogg: chirps whose base pitch (a log-spaced ladder
  over 400 Hz .. 6.4 kHz), sweep direction and number per clip encode the class, in
  noise; 0.5-3 s long, at 16 / 22.05 / 44.1 kHz, one stereo file. For every fourth
  class the audio is instead shipped as 700x700 RGBA spectrogram PNGs under
  audio/audioimg/<class folder>/ (rendered with `audio.spectrogram_image`), and the
  list names those.
- text/<class folder>/*.txt: multi-line descriptions with upper case and a few
  non-ASCII characters; the class's words come within the first 60 characters (the
  demo/test configs keep 112/64 characters) and again on the last line (so the
  reference 'last_line' mode also works).
- video/<class folder>/<clip>_NN.jpg: 2 clips per class and split, 3 frames each; a
  frame's video id is its path without the last 6 characters ("NN.jpg").
- list/<modality>/{train,test}.txt with 0-based labels, paths relative to the
  modality folder as in the reference release (audio spectrograms relative to
  audio/audioimg/); list/text/testlabel.txt; classes.txt ("1 001.Name" per line).
- The audio folder of class 2 is spelled differently from classes.txt, as in the
  real data: labels come from the lists only.

Deterministic: every file is drawn from its own seed (seed, modality, split, class,
item), and encoders are pinned (OGG stream serial numbers are rewritten), so the
same seed gives byte-identical files.
"""

from __future__ import annotations

import colorsys
import io
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from input_pipeline.fgxmedia import audio as audio_lib
from input_pipeline.demo import ogg
from input_pipeline.demo.layout import generate_and_report, write_file, write_split_lists
from input_pipeline.spec import MODALITIES, MODALITY_IDS, SPLITS

_COLOURS = ('Crimson', 'Amber', 'Azure', 'Olive', 'Ivory', 'Scarlet', 'Cobalt', 'Ochre',
            'Violet', 'Russet', 'Teal', 'Golden', 'Slate', 'Copper', 'Jade', 'Maroon',
            'Indigo', 'Saffron', 'Umber', 'Silver')
_PARTS = ('throated', 'crested', 'winged', 'tailed', 'billed', 'breasted', 'capped',
          'necked', 'backed', 'eyed')
_BIRDS = ('Warbler', 'Finch', 'Sparrow', 'Tern', 'Wren', 'Vireo', 'Flycatcher', 'Gull',
          'Kingfisher', 'Oriole')

AUDIO_SR = (16000, 22050, 44100)
AUDIO_FORMATS = ('wav', 'flac', 'ogg')
SPECTROGRAM_SIZE = 700
VIDEOS_PER_CLASS = 2
FRAMES_PER_VIDEO = 3


# ----------------------------------------------------------------------------- names

def class_words(c: int) -> tuple[str, str, str]:
    """(colour, part, bird) of class c: neighbours differ in colour, share the rest."""
    return (_COLOURS[c % len(_COLOURS)], _PARTS[(c // len(_COLOURS)) % len(_PARTS)],
            _BIRDS[(c // (len(_COLOURS) * len(_PARTS))) % len(_BIRDS)])


def class_name(c: int) -> str:
    """CUB-style folder name, e.g. '001.Crimson_throated_Warbler'."""
    colour, part, bird = class_words(c)
    return f'{c + 1:03d}.{colour}_{part}_{bird}'


def _folder(c: int, modality: str) -> str:
    name = class_name(c)
    if modality == 'audio' and c == 2:
        return name.lower().replace('_', '-')   # "misspelled" like the real audio folders
    return name


def _rng(seed: int, modality: str, split: str, c: int, j: int) -> np.random.Generator:
    return np.random.default_rng([seed, MODALITY_IDS[modality], SPLITS.index(split), c, j])


# ----------------------------------------------------------------------------- images

def _class_colour(c: int, num_classes: int) -> tuple[float, float, float]:
    hue = (c / num_classes) % 1.0
    return colorsys.hsv_to_rgb(hue, 0.85, 0.9)


def draw_background(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A muted sky/foliage background with 4-8 low-saturation twigs and leaves."""
    w, h = size
    bg = rng.uniform(0.35, 0.75, 3) * np.array([0.9, 1.0, 0.85])  # muted sky/foliage tones
    img = Image.new('RGB', (w, h), tuple(int(v * 255) for v in bg))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 9))):    # clutter: twigs and leaves, low saturation
        g = rng.uniform(0.2, 0.6)
        col = tuple(int(255 * v) for v in (g * rng.uniform(0.8, 1.1), g,
                                           g * rng.uniform(0.6, 0.9)))
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        if rng.random() < 0.5:
            d.line([x0, y0, x0 + rng.uniform(-0.6, 0.6) * w, y0 + rng.uniform(-0.3, 0.3) * h],
                   fill=col, width=int(rng.integers(2, 5)))
        else:
            r = rng.uniform(0.03, 0.08) * min(w, h)
            d.ellipse([x0 - r, y0 - r / 2, x0 + r, y0 + r / 2], fill=col)
    return img


def bird_sprite(s: int, rgb: np.ndarray, stripes: int, crest: bool,
                head_rgb: np.ndarray | None = None) -> Image.Image:
    """An s x s RGBA bird facing right: body colour `rgb` (floats in [0, 1]), `stripes`
    white wing stripes, an optional crest; head (colour `head_rgb`, default the body's),
    beak and eye in the upper right."""
    bird = Image.new('RGBA', (s, s), (0, 0, 0, 0))
    bd = ImageDraw.Draw(bird)
    body = tuple(int(v) for v in np.clip(rgb * 255, 0, 255)) + (255,)
    head = body if head_rgb is None else tuple(
        int(v) for v in np.clip(np.asarray(head_rgb) * 255, 0, 255)) + (255,)
    dark = tuple(int(v * 0.45) for v in body[:3]) + (255,)
    u = s / 100.0
    bd.polygon([(18 * u, 50 * u), (2 * u, 40 * u), (4 * u, 62 * u)], fill=dark)     # tail
    bd.ellipse([14 * u, 36 * u, 72 * u, 70 * u], fill=body)                          # body
    bd.ellipse([56 * u, 22 * u, 84 * u, 50 * u], fill=head)                          # head
    bd.polygon([(82 * u, 33 * u), (98 * u, 38 * u), (82 * u, 42 * u)],
               fill=(235, 190, 60, 255))                                             # beak
    bd.ellipse([71 * u, 30 * u, 76 * u, 35 * u], fill=(10, 10, 10, 255))             # eye
    bd.ellipse([26 * u, 42 * u, 58 * u, 60 * u], fill=dark)                          # wing
    for k in range(stripes):
        x = (32 + 8 * k) * u
        bd.line([x, 44 * u, x + 4 * u, 58 * u], fill=(250, 250, 240, 255), width=max(1, int(2 * u)))
    if crest:
        bd.polygon([(62 * u, 26 * u), (66 * u, 8 * u), (72 * u, 23 * u)], fill=dark)
    bd.line([34 * u, 69 * u, 32 * u, 84 * u], fill=(60, 40, 20, 255), width=max(1, int(2 * u)))
    bd.line([46 * u, 69 * u, 48 * u, 84 * u], fill=(60, 40, 20, 255), width=max(1, int(2 * u)))
    return bird


def paste_bird(img: Image.Image, bird: Image.Image, rng: np.random.Generator,
               pose: tuple[float, float, float, float]) -> None:
    """Flip the sprite with probability 1/2, rotate it by the pose angle and paste it
    centred at the pose's (x, y) (in units of the image)."""
    w, h = img.size
    cx, cy, _, angle = pose
    s = bird.size[0]
    if rng.random() < 0.5:
        bird = bird.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    bird = bird.rotate(float(angle), resample=Image.Resampling.BILINEAR, expand=False)
    img.paste(bird, (int(cx * w - s / 2), int(cy * h - s / 2)), bird)


def blur_and_noise(img: Image.Image, rng: np.random.Generator, noise: float = 8.0,
                   blur: float = 0.6) -> Image.Image:
    """A slight Gaussian blur, then Gaussian pixel noise of std `noise` grey levels."""
    a = np.asarray(img.filter(ImageFilter.GaussianBlur(blur)), np.float32)
    a += rng.normal(0, noise, a.shape)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def draw_bird(c: int, num_classes: int, rng: np.random.Generator, size: tuple[int, int],
              *, pose: tuple[float, float, float, float] | None = None) -> Image.Image:
    """One RGB image of class c: bird on a cluttered background, with pose jitter.

    `pose` = (centre x, centre y, scale, angle) in units of the image; drawn if None.
    The class sets the body hue, the wing stripes (1..3) and the crest (alternate triples).
    """
    w, h = size
    img = draw_background(rng, size)
    if pose is None:
        pose = (rng.uniform(0.42, 0.58), rng.uniform(0.42, 0.58), rng.uniform(0.85, 1.1),
                rng.uniform(-15, 15))
    s = int(min(w, h) * 0.75 * pose[2])
    rgb = np.array(_class_colour(c, num_classes)) * rng.uniform(0.9, 1.05)
    paste_bird(img, bird_sprite(s, rgb, c % 3 + 1, bool((c // 3) % 2)), rng, pose)
    return blur_and_noise(img, rng)


def _image_file(c: int, num_classes: int, split: str, j: int, seed: int,
                kind: str) -> tuple[bytes, str]:
    """(encoded bytes, extension) of image item j; kind in rgb/gray/cmyk/rgba."""
    rng = _rng(seed, 'image', split, c, j)
    size = (int(rng.integers(120, 200)), int(rng.integers(110, 180)))
    img = draw_bird(c, num_classes, rng, size)
    buf = io.BytesIO()
    if kind == 'rgba':
        alpha = Image.new('L', img.size, 255)
        ImageDraw.Draw(alpha).rectangle([0, 0, img.size[0] // 6, img.size[1]], fill=0)
        img.putalpha(alpha)
        img.save(buf, format='PNG')
        return buf.getvalue(), '.png'
    if kind == 'gray':
        img = img.convert('L')
    elif kind == 'cmyk':
        img = img.convert('CMYK')
    img.save(buf, format='JPEG', quality=90)
    return buf.getvalue(), '.jpg'


def _image_kind(c: int, split: str, j: int) -> str:
    if split == 'train' and c == 0 and j == 1:
        return 'cmyk'
    if split == 'train' and c == 1 and j == 2:
        return 'rgba'
    if j == 3 and c % 3 == 0:
        return 'gray'
    return 'rgb'


# ----------------------------------------------------------------------------- audio

def pitch_ladder(num_classes: int, lo: float = 400.0, hi: float = 6400.0) -> np.ndarray:
    """Base pitch per class: log-spaced from lo to hi (distinct rows even at 64 px)."""
    if num_classes == 1:
        return np.array([math.sqrt(lo * hi)])
    return lo * (hi / lo) ** (np.arange(num_classes) / (num_classes - 1))


def synth_chirps(c: int, num_classes: int, rng: np.random.Generator, sr: int,
                 duration: float) -> np.ndarray:
    """Mono float32 clip of class c: n = 2 + c % 3 chirps at the class pitch, sweeping
    up (odd c) or down (even c), with a harmonic and noise."""
    n = int(round(duration * sr))
    t = np.arange(n) / sr
    f0 = pitch_ladder(num_classes)[c] * (1 + rng.uniform(-0.02, 0.02))
    sweep = 0.06 if c % 2 else -0.06
    y = np.zeros(n)
    count = 2 + c % 3
    length = 0.8 * duration / count
    vib_rate, vib_depth = rng.uniform(20, 35), 0.03   # vibrato: a band, not a hairline
    for k in range(count):
        start = (k + 0.1 + rng.uniform(-0.05, 0.05)) * duration / count
        m = (t >= start) & (t < start + length)
        tt = t[m] - start
        env = np.sin(np.pi * tt / length) ** 0.5
        inst = f0 * (1 + sweep * (tt / length - 0.5) + vib_depth * np.sin(2 * np.pi * vib_rate * tt))
        phase = 2 * np.pi * np.cumsum(inst) / sr
        chirp = np.sin(phase)
        if 2 * f0 * 1.1 < 0.45 * sr:
            chirp = chirp + 0.3 * np.sin(2 * phase)
        y[m] += env * chirp * rng.uniform(0.4, 0.6)
    y += rng.normal(0, rng.uniform(0.002, 0.01), n)
    return y.astype(np.float32)


def _audio_file(c: int, num_classes: int, split: str, j: int, seed: int,
                as_image: bool) -> tuple[bytes, str]:
    import soundfile as sf

    rng = _rng(seed, 'audio', split, c, j)
    duration = float(rng.uniform(0.5, 3.0))
    if as_image:
        y = synth_chirps(c, num_classes, rng, audio_lib.SAMPLE_RATE, duration)
        rgb = audio_lib.spectrogram_image(y, SPECTROGRAM_SIZE)
        rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], -1)
        buf = io.BytesIO()
        Image.fromarray(rgba).save(buf, format='PNG', compress_level=1)
        return buf.getvalue(), '.png'
    sr = AUDIO_SR[int(rng.integers(len(AUDIO_SR)))]
    fmt = AUDIO_FORMATS[j % len(AUDIO_FORMATS)]
    y = synth_chirps(c, num_classes, rng, sr, duration)
    if split == 'train' and c == 0 and j == 0:   # one stereo file
        y = np.stack([y, 0.8 * y + rng.normal(0, 0.005, y.shape).astype(np.float32)], -1)
        fmt = 'wav'
    buf = io.BytesIO()
    subtype = 'VORBIS' if fmt == 'ogg' else 'PCM_16'
    sf.write(buf, np.clip(y, -1, 1), sr, format=fmt.upper(), subtype=subtype)
    data = buf.getvalue()
    if fmt == 'ogg':
        data = ogg.pin_serial(data, serial=(seed * 7919 + c * 131 + j) & 0x7FFFFFFF)
    return data, '.' + fmt


# ----------------------------------------------------------------------------- text

_OPENINGS = ('The', 'This', 'A small', 'One', 'Our', 'Each')
_VERBS = ('sings from', 'perches on', 'forages in', 'nests near', 'hops along')
_HABITATS = ('reed beds', 'pine forest', 'the café garden', 'river banks', 'open meadows',
             'coastal cliffs', 'old orchards')
_FILLER = (
    'It has a short beak and dark eyes.',
    'Its legs are thin; the feet grip twigs firmly.',
    'Observers describe the call as clear and sweet — often repeated.',
    'The bird is about 14 cm long, with a rounded head.',
    'FEMALES are slightly duller than males.',
    'It is a naïve visitor to feeders in winter.',
    'Juveniles show paler edges on the wing feathers.',
    'Flight is quick and direct, with rapid wing beats.',
    'It feeds on seeds, insects and small berries.',
    'Pairs stay together through the breeding season.',
)


def _text_file(c: int, split: str, j: int, seed: int) -> str:
    rng = _rng(seed, 'text', split, c, j)
    colour, part, bird = class_words(c)
    name = f'{colour}-{part} {bird}'
    if rng.random() < 0.3:
        name = name.upper()
    # Class words first (and the colour twice) so short truncations keep them.
    first = (f'{name}. {_OPENINGS[rng.integers(len(_OPENINGS))]} {colour.lower()} bird '
             f'{_VERBS[rng.integers(len(_VERBS))]} {_HABITATS[rng.integers(len(_HABITATS))]}.')
    picks = rng.choice(len(_FILLER), size=int(rng.integers(2, 5)), replace=False)
    middle = [_FILLER[i] for i in picks]
    last = f'In short: a {colour.lower()}-{part} {bird.lower()}.'
    # 2-4 lines: the first sentence, filler split over one or two lines, the summary.
    if len(middle) > 2 and rng.random() < 0.5:
        body = [' '.join(middle[:2]), ' '.join(middle[2:])]
    else:
        body = [' '.join(middle)]
    return '\n'.join([first] + body + [last]) + '\n'


# ----------------------------------------------------------------------------- video

def _video_frames(c: int, num_classes: int, split: str, v: int, seed: int) -> list[bytes]:
    rng = _rng(seed, 'video', split, c, v)
    x, y = rng.uniform(0.4, 0.6, 2)
    dx, dy = rng.uniform(-0.05, 0.05, 2)
    scale, angle = rng.uniform(0.8, 1.0), rng.uniform(-10, 10)
    frames = []
    for f in range(FRAMES_PER_VIDEO):
        frng = _rng(seed, 'video', split, c, 1000 * (v + 1) + f)
        img = draw_bird(c, num_classes, frng, (96, 80),
                        pose=(x + f * dx, y + f * dy, scale, angle + 3 * f))
        buf = io.BytesIO()
        img.save(buf, format='JPEG', quality=85)
        frames.append(buf.getvalue())
    return frames


def generate_demo_dataset(out_dir: str | os.PathLike, *, num_classes: int = 10,
                          per_class: int = 12, test_per_class: int | None = None,
                          seed: int = 0) -> dict:
    """Write the demo data set under out_dir; returns {modality: {split: items}}.

    per_class / test_per_class: items per class for image, audio and text in the
    train / test split (test defaults to per_class). Video has 2 clips x 3 frames per
    class and split (one list line per frame). Existing files are overwritten.
    """
    if num_classes < 1 or num_classes > len(_COLOURS) * len(_PARTS) * len(_BIRDS):
        raise ValueError(f'num_classes must be in [1, {len(_COLOURS) * len(_PARTS) * len(_BIRDS)}],'
                         f' got {num_classes}')
    if per_class < 1:
        raise ValueError(f'per_class must be >= 1, got {per_class}')
    test_per_class = per_class if test_per_class is None else test_per_class
    if test_per_class < 1:
        raise ValueError(f'test_per_class must be >= 1, got {test_per_class}')
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    counts = {m: {s: 0 for s in SPLITS} for m in MODALITIES}

    write_file(root, 'classes.txt', ''.join(f'{c + 1} {class_name(c)}\n' for c in range(num_classes)))
    for split in SPLITS:
        n_items = per_class if split == 'train' else test_per_class
        lines: dict[str, list[str]] = {m: [] for m in counts}
        tag = 'tr' if split == 'train' else 'te'
        for c in range(num_classes):
            stem = class_name(c).split('.', 1)[1]
            for j in range(n_items):
                data, ext = _image_file(c, num_classes, split, j, seed, _image_kind(c, split, j))
                rel = f'{_folder(c, "image")}/{stem}_{tag}{j:04d}{ext}'
                write_file(root, f'image/{rel}', data)
                lines['image'].append(f'{rel} {c}')

                as_image = c % 4 == 3
                data, ext = _audio_file(c, num_classes, split, j, seed, as_image)
                rel = f'{_folder(c, "audio")}/{stem}_{tag}{j:04d}{ext}'
                write_file(root, f'audio/audioimg/{rel}' if as_image else f'audio/{rel}', data)
                lines['audio'].append(f'{rel} {c}')

                rel = f'{_folder(c, "text")}/{stem}_{tag}{j:04d}.txt'
                write_file(root, f'text/{rel}', _text_file(c, split, j, seed))
                lines['text'].append(f'{rel} {c}')
            for v in range(VIDEOS_PER_CLASS):
                for f, data in enumerate(_video_frames(c, num_classes, split, v, seed)):
                    rel = f'{_folder(c, "video")}/{stem}_{tag}v{v:02d}_{f + 1:02d}.jpg'
                    write_file(root, f'video/{rel}', data)
                    lines['video'].append(f'{rel} {c}')
        write_split_lists(root, split, lines, counts)
    return counts


def demo_main(out: str | os.PathLike, classes: int = 10, per_class: int = 12,
              seed: int = 0) -> dict:
    """`dcinet demo-data`: generate and print a short summary."""
    return generate_and_report('demo data set', generate_demo_dataset, out, classes,
                               per_class, seed)
