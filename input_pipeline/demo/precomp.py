"""A generated precomp folder (`docs/hslm_data.md#demo-data`): learnable at the instance level.

Retrieval is scored per image, so class-level topics are not enough: each image is a
combination of one value from each of four attribute groups (colour, object, place,
action; `values` per group), distinct within a split. Each attribute is drawn into 1-2
regions as its embedding plus noise; the other regions are distractors (fresh noise);
region order is shuffled and features are shifted and clipped at 0 like pooled CNN
activations. Each of the image's 5 captions names a random subset of at least two of
its attributes through varied templates with uninformative filler words, so a small
model that learns word ↔ region matching can tell the images of a split apart.

The format quirks of the real releases are all present: capitals, punctuation (commas,
quotes, '--', '!', "it's"), non-ASCII words ('café' is a place, 'naïve' a filler, both
frequent; 'crème' is rare), words seen fewer than 4 times in train+dev (→ <unk>),
words that only the test splits use, `dev` in the N_img = N_caps layout (each image's
row repeated for its 5 captions, ids repeated likewise), `_ids.txt` files, and a
`vocab.json` in the SCAN schema built from train+dev (count ≥ 4). The folder's own
manifest (`dcinet_manifest.json`, for `dcinet data check`) lists its counts and files.

Chance level: with N images and 5N captions scored at random, t2i R@K = K/N and i2t
R@K = 1 - C(5N-5, K) / C(5N, K) (at least one of the image's 5 captions in the top K);
`chance_rsum(100)` ≈ 31.6 for the default 100-image test split (rsum's maximum is 600).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from input_pipeline.check import write_manifest
from input_pipeline.precomp import captions as caps_lib
from input_pipeline.precomp import manifest as precomp_manifest
from input_pipeline.precomp.reader import CAPTIONS_PER_IMAGE, file_names

GROUPS: dict[str, tuple[str, ...]] = {
    'colour': ('red', 'blue', 'green', 'yellow', 'black', 'white', 'orange', 'purple',
               'brown', 'grey', 'pink', 'golden'),
    'object': ('dog', 'cat', 'horse', 'bicycle', 'car', 'boat', 'bird', 'child', 'woman',
               'man', 'ball', 'kite'),
    'place': ('park', 'beach', 'street', 'café', 'kitchen', 'forest', 'field', 'river',
              'garden', 'market', 'station', 'stadium'),
    'action': ('running', 'sitting', 'jumping', 'sleeping', 'swimming', 'playing',
               'standing', 'waiting', 'climbing', 'resting', 'dancing', 'walking'),
}
MAX_VALUES = min(len(v) for v in GROUPS.values())
FILLERS = ('small', 'big', 'happy', 'old', 'naïve', 'little')      # carry no image information
PREPOSITIONS = ('in', 'at', 'near', 'by')
RARE_WORDS = ('zeppelin', 'quokka', 'crème', 'xylophone', 'yurt', 'ocelot')  # 1-3 uses, train+dev
TEST_ONLY_WORDS = ('kangaroo', 'tuba', 'igloo')                       # never in train+dev
DEFAULT_SIZES = {'dev': 100, 'test': 100, 'testall': 250}            # images per eval split


def chance_rsum(num_images: int, captions_per_image: int = CAPTIONS_PER_IMAGE) -> float:
    """Expected rsum (R@1+R@5+R@10 both ways, in %) of random scores on N images."""
    n, c = int(num_images), int(captions_per_image)
    total = 0.0
    for k in (1, 5, 10):
        total += 100.0 * min(k, n) / n                                   # t2i
        miss = math.comb(n * c - c, k) / math.comb(n * c, k) if k <= n * c else 0.0
        total += 100.0 * (1.0 - miss)                                    # i2t
    return total


def write_precomp_demo(out_dir: str | os.PathLike, *, values: int = 8, train_images: int = 400,
                       dev_images: int = DEFAULT_SIZES['dev'],
                       test_images: int = DEFAULT_SIZES['test'],
                       testall_images: int = DEFAULT_SIZES['testall'], regions: int = 36,
                       feature_dim: int = 64, seed: int = 0) -> dict:
    """Write `{train,dev,test,testall}_{ims.npy,caps.txt,ids.txt}` and `vocab.json` under
    out_dir (deterministic in seed). Returns {'path', 'images': {split: n}, 'vocab_size'}."""
    values, regions, feature_dim = int(values), int(regions), int(feature_dim)
    if not 2 <= values <= MAX_VALUES:
        raise ValueError(f'values per attribute group must be in [2, {MAX_VALUES}], got {values}')
    if regions < 2 * len(GROUPS):
        raise ValueError(f'regions must be >= {2 * len(GROUPS)} (two per attribute), got {regions}')
    sizes = {'train': train_images, 'dev': dev_images, 'test': test_images,
             'testall': testall_images}
    for split, n in sizes.items():
        if not 1 <= n <= values ** len(GROUPS):
            raise ValueError(f'{split} images must be in [1, {values ** len(GROUPS)}] '
                             f'(distinct attribute combinations), got {n}')
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 0x9C])
    embeddings = rng.normal(0.0, 1.0, (len(GROUPS), values, feature_dim))
    data = {}
    for split, n in sizes.items():
        attrs = _distinct_combinations(rng, n, values)
        feats = _region_features(rng, attrs, embeddings, regions)
        data[split] = (feats, [_caption(rng, a) for a in attrs for _ in range(CAPTIONS_PER_IMAGE)])
    # Rare words: 1-3 uses over train+dev together (< 4: <unk>); test-only words likewise.
    for group, words in ((('train', 'dev'), RARE_WORDS), (('test', 'testall'), TEST_ONLY_WORDS)):
        _sprinkle(rng, [data[split][1] for split in group], words)
    for s, (split, (feats, caps)) in enumerate(data.items()):
        n = sizes[split]
        ids = [str(100000 * (s + 1) + i) for i in range(n)]
        if split == 'dev':        # the N_img = N_caps layout: one row per caption
            feats = np.repeat(feats, CAPTIONS_PER_IMAGE, axis=0)
            ids = [i for i in ids for _ in range(CAPTIONS_PER_IMAGE)]
        names = file_names(split)
        np.save(root / names['images'], feats.astype(np.float32))
        (root / names['captions']).write_text('\n'.join(caps) + '\n', encoding='utf-8')
        (root / names['ids']).write_text('\n'.join(ids) + '\n', encoding='utf-8')
    vocab = caps_lib.Vocab.build(data['train'][1] + data['dev'][1])
    vocab.save(root / 'vocab.json')
    write_manifest(root, precomp_manifest.demo_manifest(
        root, name=f'dcinet demo-data --format precomp (values {values}, seed {seed})',
        regions=regions, feature_dim=feature_dim, sizes=sizes))
    return {'path': str(root), 'images': sizes, 'vocab_size': len(vocab)}


def _distinct_combinations(rng: np.random.Generator, n: int, values: int) -> np.ndarray:
    """int (n, groups): n distinct attribute combinations, one value per group."""
    codes = rng.choice(values ** len(GROUPS), size=n, replace=False)
    return np.stack([(codes // values ** g) % values for g in range(len(GROUPS))], axis=1)


def _region_features(rng: np.random.Generator, attrs: np.ndarray, embeddings: np.ndarray,
                     regions: int) -> np.ndarray:
    n, groups = attrs.shape
    dim = embeddings.shape[-1]
    x = rng.normal(0.0, 1.0, (n, regions, dim))                     # distractor regions
    for i in range(n):
        slots = rng.permutation(regions)
        k = 0
        for g in range(groups):
            for _ in range(int(rng.integers(1, 3))):                 # 1-2 regions per attribute
                x[i, slots[k]] = embeddings[g, attrs[i, g]] + rng.normal(0.0, 0.5, dim)
                k += 1
    return np.maximum(1.0 + 0.5 * x, 0.0)


def _caption(rng: np.random.Generator, attr: np.ndarray) -> str:
    """One caption naming a random subset (>= 2) of the image's attributes."""
    colour, obj, place, action = (GROUPS[g][int(v)] for g, v in zip(GROUPS, attr))
    shown = set(rng.choice(4, size=int(rng.integers(2, 5)), replace=False).tolist())
    noun = [colour] if 0 in shown else []
    if rng.random() < 0.3:
        noun.insert(0, str(rng.choice(FILLERS)))
    noun.append(obj if 1 in shown else str(rng.choice(('thing', 'something'))))
    noun = ' '.join(_random_caps(rng, w) for w in noun)
    det = 'an' if noun[0].lower() in 'aeiou' else 'a'
    verb = action if 3 in shown else ''
    where = f'{rng.choice(PREPOSITIONS)} the {place}' if 2 in shown else ''
    template = int(rng.integers(5))
    if template == 0:
        text = f'{det} {noun} {verb} {where}.'
    elif template == 1 and where:
        text = f'{where}, {det} {noun} {verb}.'
    elif template == 2:
        text = f'Photo of {det} {noun} {verb} {where}!'
    elif template == 3:
        text = f"{det} {noun} -- {verb} {where}, it's lovely."
    else:
        text = f'there is {det} {noun} {verb} {where} ; "nice".'
    text = ' '.join(text.split()).replace(' ,', ',').replace(' .', '.').replace(' !', '!')
    return text[0].upper() + text[1:]


def _random_caps(rng: np.random.Generator, word: str) -> str:
    r = rng.random()
    return word.upper() if r < 0.05 else word.capitalize() if r < 0.15 else word


def _sprinkle(rng: np.random.Generator, caption_lists: list[list[str]],
              words: tuple[str, ...]) -> None:
    """Prefix 1-3 captions (drawn over all the lists) with each word ("Quokka: ...")."""
    where = [(j, c) for j, caps in enumerate(caption_lists) for c in range(len(caps))]
    for w in words:
        for k in rng.choice(len(where), size=int(rng.integers(1, 4)), replace=False):
            j, c = where[k]
            caption_lists[j][c] = f'{w.capitalize()}: {caption_lists[j][c]}'


def precomp_demo_main(out: str | os.PathLike, classes: int | None = None,
                      per_class: int | None = None, seed: int = 0,
                      feature_dim: int | None = None) -> dict:
    """`dcinet demo-data --format precomp`: `classes` = values per attribute group
    (default 8), `per_class` = train images per value (train = classes × per_class,
    default 50); writes the folder and prints a summary."""
    values = classes or 8
    info = write_precomp_demo(out, values=values, train_images=values * (per_class or 50),
                              feature_dim=feature_dim or 64, seed=seed)
    sizes = ', '.join(f'{s} {n}' for s, n in info['images'].items())
    print(f'synthetic precomp data: images {sizes} (5 captions each; dev has one feature row '
          f'per caption), vocab {info["vocab_size"]} words, seed {seed}, written to '
          f'{info["path"]}; chance rsum on test {chance_rsum(info["images"]["test"]):.1f}')
    return info
