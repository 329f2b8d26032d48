"""A harder generated FG-XMedia for ablations: confusable classes (`dcinet demo-data --difficulty hard`).

The easy demo (`demo.py`) is separable at a glance in every modality, so a tiny model
reaches the retrieval ceiling and no interaction can show an effect. Here the classes
come in sister pairs (pair g = c // 2, member k = c % 2) and every cue is shared or
unreliable, so a demo-sized model lands well below the ceiling (docs/ablation_demo.md):

- names: class c is '<Colour of pair g> <Bird of member k>', so every word of a name is
  shared with other classes: the colour with the sister, the bird word with half of
  all classes.
- image: a two-tone bird whose body has the pair colour and whose head has the next
  pair's colour, so each colour appears on two pairs (on different parts). The member
  shows only in the crest, which member 1 raises in CREST_SHOWN of its images and
  member 0 never. Wing stripes are random (not a cue). A random colour cast, distractor
  blobs painted in other classes' colours, pose and scale jitter, and pixel noise.
- audio: speech-like: voiced syllables (harmonics of a random speaker pitch, shaped
  by two formants) with consonant bursts. The pair sets the vowel (F1, F2); the member
  sets the direction of the F2 glide within each syllable (falling / rising). Most
  clips carry a quieter second voice of another class and background noise.
- text: short descriptions whose clauses come in random order; the species is named
  in only NAME_SHOWN of them. Other clauses name the body colour (the pair), the head
  colour (shared by two pairs), the crest or the song's contour (the member), each
  sometimes, and sometimes wrongly; filler is shared by all classes. Configs that
  keep the first 64 characters lose whatever comes later.
- lists, classes.txt and test labels in the real layout, as the easy demo; no video
  (DCINet uses image, audio and text). Images are RGB JPEGs, audio 22.05 kHz WAVs.

Deterministic: every file has its own seed (seed, modality, split, class, item) in a
stream tagged apart from the easy demo's, so the same seed gives the same bytes.
"""

from __future__ import annotations

import colorsys
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from input_pipeline.fgxmedia import audio as audio_lib
from input_pipeline.demo import fgxmedia as demo, layout as demo_layout
from input_pipeline.spec import MODALITY_IDS, SPLITS

COLOURS = ('Crimson', 'Azure', 'Olive', 'Amber', 'Violet', 'Teal', 'Ochre', 'Slate',
           'Rose', 'Jade')
BIRDS = ('Warbler', 'Finch')
MAX_CLASSES = len(COLOURS) * len(BIRDS)
MODALITIES = ('image', 'audio', 'text')

# Difficulty knobs (one place; docs/ablation_demo.md records how they were calibrated).
STREAM_TAG = 7919          # keeps the seeds of this generator apart from the easy demo's
HUE_JITTER = 0.06          # body / head hue jitter (pairs sit 1 / num_pairs apart)
CAST = 0.22                # colour cast: each RGB channel scaled by 1 +- CAST
DISTRACTORS = (2, 5)       # blobs in other classes' colours per image
CREST_SHOWN = 0.6          # member 1 raises its crest in this fraction of its images
IMAGE_NOISE = 16.0         # pixel noise std (grey levels)
SECOND_VOICE = 0.5         # fraction of clips with a second, quieter voice of another class
SECOND_VOICE_DB = (-12.0, -4.0)
SNR_DB = (10.0, 25.0)      # background noise level relative to the voice
F2_GLIDE = 350.0           # Hz: the member cue of the audio
NAME_SHOWN = 0.5           # fraction of texts that name the species
CLUE_SHOWN = 0.6           # each descriptive clause's chance of appearing
CLUE_WRONG = 0.1           # chance that a clause that appears describes another class
SAMPLE_RATE = audio_lib.SAMPLE_RATE

# Vowels of the pairs: (F1, F2) in Hz, F2 spread over the low part of the spectrum.
_VOWELS = ((900, 1300), (400, 3200), (650, 2300), (300, 900), (800, 2800),
           (500, 1700), (350, 3600), (850, 1000), (550, 2600), (700, 1900))
_HABITATS = ('reed beds', 'pine forest', 'river banks', 'open meadows', 'old orchards',
             'coastal cliffs', 'the café garden')
_FILLER = ('It has dark eyes.', 'Legs thin.', 'Feeds on seeds.', 'Often in pairs.',
           'A shy bird.', 'Seen in winter.', 'Quick flight.', 'FEMALES duller.',
           'A naïve visitor.', 'Short beak.')


# ----------------------------------------------------------------------------- classes

def class_words(c: int) -> tuple[str, str]:
    """(colour, bird) of class c: sisters share the colour, every other class the bird."""
    return COLOURS[c // 2], BIRDS[c % 2]


def class_name(c: int) -> str:
    """CUB-style folder name, e.g. '001.Crimson_Warbler'."""
    colour, bird = class_words(c)
    return f'{c + 1:03d}.{colour}_{bird}'


def _num_pairs(num_classes: int) -> int:
    return (num_classes + 1) // 2


def _rng(seed: int, modality: str, split: str, c: int, j: int) -> np.random.Generator:
    return np.random.default_rng([STREAM_TAG, seed, MODALITY_IDS[modality],
                                  SPLITS.index(split), c, j])


# ----------------------------------------------------------------------------- images

def pair_hue(g: int, num_pairs: int) -> float:
    return (g / num_pairs) % 1.0


def _colour(g: int, num_pairs: int, rng: np.random.Generator) -> np.ndarray:
    hue = pair_hue(g, num_pairs) + rng.uniform(-HUE_JITTER, HUE_JITTER)
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, rng.uniform(0.55, 0.95),
                                        rng.uniform(0.6, 0.95)))


def draw_hard_bird(c: int, num_classes: int, rng: np.random.Generator,
                   size: tuple[int, int]) -> tuple[Image.Image, bool]:
    """(RGB image of class c, whether the crest shows)."""
    w, h = size
    pairs = _num_pairs(num_classes)
    g, k = divmod(c, 2)
    img = demo.draw_background(rng, size)
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(*DISTRACTORS))):        # blobs in other classes' colours
        other = _colour(int(rng.integers(pairs)), pairs, rng)
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(0.05, 0.14) * min(w, h)
        d.ellipse([x0 - r, y0 - r * rng.uniform(0.4, 1.0), x0 + r, y0 + r * 0.6],
                  fill=tuple(int(v * 255) for v in other))
    pose = (rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65), rng.uniform(0.6, 1.0),
            rng.uniform(-25, 25))
    s = int(min(w, h) * 0.75 * pose[2])
    crest = k == 1 and rng.random() < CREST_SHOWN
    body, head = _colour(g, pairs, rng), _colour((g + 1) % pairs, pairs, rng)
    sprite = demo.bird_sprite(s, body, int(rng.integers(1, 4)), crest, head_rgb=head)
    demo.paste_bird(img, sprite, rng, pose)
    cast = 1 + rng.uniform(-CAST, CAST, 3)
    img = Image.fromarray(np.clip(np.asarray(img, np.float32) * cast, 0, 255).astype(np.uint8))
    return demo.blur_and_noise(img, rng, noise=IMAGE_NOISE), crest


def _image_file(c: int, num_classes: int, split: str, j: int, seed: int) -> bytes:
    rng = _rng(seed, 'image', split, c, j)
    size = (int(rng.integers(80, 128)), int(rng.integers(72, 112)))
    img, _ = draw_hard_bird(c, num_classes, rng, size)
    buf = io.BytesIO()
    img.save(buf, format='JPEG', quality=90)
    return buf.getvalue()


# ----------------------------------------------------------------------------- audio

def _syllable(f0: float, f1: float, f2_start: float, f2_end: float, n: int,
              sr: int) -> np.ndarray:
    """One voiced syllable of n samples: harmonics of a slightly falling f0 weighted by
    two Gaussian formants (F2 gliding linearly), under a smooth envelope."""
    t = np.arange(n) / sr
    pitch = f0 * (1.05 - 0.1 * t / max(t[-1], 1e-6))
    phase = 2 * np.pi * np.cumsum(pitch) / sr
    f2 = np.linspace(f2_start, f2_end, n)
    y = np.zeros(n)
    for h in range(1, int(6000 / f0) + 1):
        fh = h * pitch
        amp = (np.exp(-0.5 * ((fh - f1) / 150.0) ** 2) + 0.8 * np.exp(-0.5 * ((fh - f2) / 250.0) ** 2)
               + 0.03 / h)
        y += amp * np.sin(h * phase)
    env = np.sin(np.pi * np.arange(n) / n) ** 0.7
    return y * env


def speech_clip(c: int, num_classes: int, rng: np.random.Generator, duration: float,
                sr: int = SAMPLE_RATE) -> np.ndarray:
    """A voice saying syllables in class c's vowel with its F2 glide (no noise added)."""
    g, k = divmod(c, 2)
    f1, f2 = _VOWELS[g % len(_VOWELS)]
    f1, f2 = f1 * rng.uniform(0.93, 1.07), f2 * rng.uniform(0.93, 1.07)
    glide = F2_GLIDE * (1 if k else -1)
    f0 = rng.uniform(90, 260)                  # the speaker: not a class cue
    n_total = int(duration * sr)
    y = np.zeros(n_total)
    pos = int(rng.uniform(0.02, 0.15) * sr)
    while True:
        n = int(rng.uniform(0.12, 0.32) * sr)
        if pos + n > n_total:
            break
        if rng.random() < 0.5:                 # a consonant: a short high noise burst
            b = int(0.03 * sr)
            burst = rng.normal(0, 0.3, b) * np.hanning(b)
            burst = np.diff(burst, prepend=0.0)   # tilt towards high frequencies
            y[pos:pos + b] += burst
            pos += b
            if pos + n > n_total:
                break
        y[pos:pos + n] += rng.uniform(0.6, 1.0) * _syllable(
            f0, f1, f2 - glide / 2, f2 + glide / 2, n, sr)
        pos += n + int(rng.uniform(0.03, 0.15) * sr)
    return y


def _audio_file(c: int, num_classes: int, split: str, j: int, seed: int) -> bytes:
    import soundfile as sf

    rng = _rng(seed, 'audio', split, c, j)
    duration = float(rng.uniform(1.0, 2.5))
    y = speech_clip(c, num_classes, rng, duration)
    peak = np.abs(y).max() + 1e-9
    if rng.random() < SECOND_VOICE:
        other = (c + int(rng.integers(1, num_classes))) % num_classes if num_classes > 1 else c
        z = speech_clip(other, num_classes, rng, duration)
        gain = 10 ** (rng.uniform(*SECOND_VOICE_DB) / 20)
        y = y + z * gain * peak / (np.abs(z).max() + 1e-9)
    rms = np.sqrt(np.mean(y ** 2)) + 1e-9
    y = y + rng.normal(0, rms * 10 ** (-rng.uniform(*SNR_DB) / 20), y.shape)
    y = 0.7 * y / (np.abs(y).max() + 1e-9)
    buf = io.BytesIO()
    sf.write(buf, y.astype(np.float32), SAMPLE_RATE, format='WAV', subtype='PCM_16')
    return buf.getvalue()


# ----------------------------------------------------------------------------- text

def _maybe_wrong(c: int, num_classes: int, rng: np.random.Generator) -> int:
    """c, or another class with probability CLUE_WRONG (an observer's mistake)."""
    if num_classes > 1 and rng.random() < CLUE_WRONG:
        return (c + int(rng.integers(1, num_classes))) % num_classes
    return c


def text_clauses(c: int, num_classes: int, rng: np.random.Generator) -> tuple[list[str], bool]:
    """(clauses of one description in reading order, whether the species is named)."""
    pairs = _num_pairs(num_classes)
    clauses = []
    named = rng.random() < NAME_SHOWN
    if named:
        colour, bird = class_words(c)
        clauses.append(f'{colour} {bird}.' if rng.random() < 0.7 else f'{colour.upper()} {bird.upper()}.')
    if rng.random() < CLUE_SHOWN:
        clauses.append(f'{COLOURS[_maybe_wrong(c, num_classes, rng) // 2].lower()} body.')
    if rng.random() < CLUE_SHOWN:
        g = _maybe_wrong(c, num_classes, rng) // 2
        clauses.append(f'{COLOURS[(g + 1) % pairs].lower()} head.')
    if rng.random() < CLUE_SHOWN:
        member = _maybe_wrong(c, num_classes, rng) % 2
        clauses.append('crested.' if member else 'no crest.')
    if rng.random() < CLUE_SHOWN:
        member = _maybe_wrong(c, num_classes, rng) % 2
        clauses.append('song rises.' if member else 'song falls.')
    clauses.append(f'In {_HABITATS[int(rng.integers(len(_HABITATS)))]}.')
    clauses += [_FILLER[i] for i in rng.choice(len(_FILLER), int(rng.integers(0, 2)), replace=False)]
    first = 1 if named else 0                       # a name, when given, comes first
    order = first + rng.permutation(len(clauses) - first)
    return clauses[:first] + [clauses[i] for i in order], named


def _text_file(c: int, num_classes: int, split: str, j: int, seed: int) -> str:
    rng = _rng(seed, 'text', split, c, j)
    clauses, _ = text_clauses(c, num_classes, rng)
    cut = int(rng.integers(1, len(clauses) + 1))        # one or two lines
    lines = [' '.join(clauses[:cut]), ' '.join(clauses[cut:])]
    return '\n'.join(ln for ln in lines if ln) + '\n'


# ----------------------------------------------------------------------------- writer

def generate_hard_dataset(out_dir: str | os.PathLike, *, num_classes: int = 10,
                          per_class: int = 30, test_per_class: int | None = None,
                          seed: int = 0) -> dict:
    """Write the hard demo data set under out_dir; returns {modality: {split: items}}."""
    if not 2 <= num_classes <= MAX_CLASSES:
        raise ValueError(f'num_classes must be in [2, {MAX_CLASSES}], got {num_classes}')
    test_per_class = per_class if test_per_class is None else test_per_class
    if per_class < 1 or test_per_class < 1:
        raise ValueError(f'per_class and test_per_class must be >= 1, got '
                         f'{per_class}, {test_per_class}')
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    demo_layout.write_file(root, 'classes.txt',
                    ''.join(f'{c + 1} {class_name(c)}\n' for c in range(num_classes)))
    counts = {m: {} for m in MODALITIES}
    for split in SPLITS:
        n_items = per_class if split == 'train' else test_per_class
        tag = 'tr' if split == 'train' else 'te'
        lines: dict[str, list[str]] = {m: [] for m in MODALITIES}
        for c in range(num_classes):
            folder = class_name(c)
            stem = folder.split('.', 1)[1]
            for j in range(n_items):
                files = {'image': (_image_file(c, num_classes, split, j, seed), '.jpg'),
                         'audio': (_audio_file(c, num_classes, split, j, seed), '.wav'),
                         'text': (_text_file(c, num_classes, split, j, seed), '.txt')}
                for m, (data, ext) in files.items():
                    rel = f'{folder}/{stem}_{tag}{j:04d}{ext}'
                    demo_layout.write_file(root, f'{m}/{rel}', data)
                    lines[m].append(f'{rel} {c}')
        demo_layout.write_split_lists(root, split, lines, counts)
    return counts


def hard_demo_main(out: str | os.PathLike, classes: int = 10, per_class: int = 30,
                   seed: int = 0) -> dict:
    """`dcinet demo-data --difficulty hard`: generate and print a short summary."""
    return demo_layout.generate_and_report('hard demo data set', generate_hard_dataset, out,
                                           classes, per_class, seed)
