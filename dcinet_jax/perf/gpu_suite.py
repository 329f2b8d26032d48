"""`dcinet bench --suite gpu`: every GPU figure of benchmarks/RESULTS.md in one command.

GPU time here is rare and short (about 15 minutes a session, at most 10 a command), on
a bare image with jax, flax, optax, orbax, numpy, torch and timm but no TensorFlow,
tfds, librosa or ml_collections. So the suite needs no data files (synthetic batches on
the devices, random features for evaluation), imports nothing TensorFlow-side, and
gives every item its own time budget (`Item.budget_s`; the sum is at most
`TOTAL_BUDGET_S`, 8 minutes): each item runs as one `dcinet bench` subprocess killed at
its budget, so an item that runs long or out of memory costs its budget and nothing
else; what finished is written after every item. The one wheel the image lacks is
ml_collections (pure Python: configs are ConfigDicts); `launch/gpu_suite.sh` installs it
from a carried folder (docs: benchmarks/README.md#gpu-suite).

Items: the train step of DCINet at 448 px in float32 (with the PyTorch peer and the
cold/warm compile pair) and bfloat16, FGCrossNet, DSFFN, HSLM at full widths (float32
and bfloat16), and the ViT-B/16 and VGG16 backbones: step time, images (pairs) per
second, compile, peak memory, utilisation from the compiled step's cost analysis, the
eval forward's features/s, and the largest batch (bisection, in its own budget). Then
`eval`: DSFFN features/s, HSLM score tiles (pairs/s) on every device, and the full
FG-XMedia ranking on the device. `--tiny` runs the same items on the test configs,
in this process and with a few steps, so the test suite keeps the suite working on CPU.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

TOTAL_BUDGET_S = 480
RESULTS_BEGIN, RESULTS_END = '<!-- gpu-suite:begin -->', '<!-- gpu-suite:end -->'


@dataclasses.dataclass(frozen=True)
class Item:
    """One `dcinet bench` run: `config` is 'configs/FILE.py[:ARG]'."""
    name: str
    config: str
    dtype: str = 'float32'
    steps: int = 10
    budget_s: int = 40
    max_batch_budget_s: int = 0         # 0: no largest-batch search
    peer: bool = False
    cache_check: bool = False
    overrides: tuple[str, ...] = ()      # 'field=value' of the config


FULL = (
    Item('dcinet_448_bf16', 'configs/dcinet_fgxmedia.py', 'bfloat16', budget_s=90,
         max_batch_budget_s=25, peer=True, cache_check=True,
         overrides=('data.batch_per_modality=64',)),
    Item('dcinet_448_f32', 'configs/dcinet_fgxmedia.py', budget_s=60, peer=True,
         overrides=('data.batch_per_modality=32',)),
    Item('fgcrossnet_448', 'configs/fgcrossnet_fgxmedia.py', 'bfloat16', budget_s=30),
    Item('dsffn_vegas', 'configs/dsffn_vegas.py', budget_s=20),
    Item('hslm_f30k_f32', 'configs/hslm_f30k.py', budget_s=40, max_batch_budget_s=20),
    Item('hslm_f30k_bf16', 'configs/hslm_f30k.py', 'bfloat16', budget_s=30),
    Item('vit_b16_448', 'configs/backbones.py:vit_b16', 'bfloat16', budget_s=35),
    Item('vgg16_448', 'configs/backbones.py:vgg16', 'bfloat16', budget_s=35),
)
EVAL_BUDGET_S = 40
TINY = (
    Item('dcinet_test_bf16', 'configs/test.py', 'bfloat16', steps=2),
    Item('hslm_test_bf16', 'configs/hslm_test.py', 'bfloat16', steps=2),
)   # DSFFN's step: tests/test_dsffn_train.py; its eval features: the eval phase


# DCINet at 448 with each path of the ResNet's `model.conv1x1`, so the first GPU figures
# decide the GPU default (docs/model.md#1x1-convolutions).
CONV1X1_PAIR = tuple(Item(f'dcinet_448_bf16_conv1x1_{v}', 'configs/dcinet_fgxmedia.py',
                          'bfloat16', budget_s=25,
                          overrides=(f'model.conv1x1={v}', 'data.batch_per_modality=64'))
                     for v in ('einsum', 'conv'))


def load_config(spec: str) -> Any:
    """'configs/FILE.py[:ARG]' -> its get_config(ARG) (configs/ is a package)."""
    path, _, arg = spec.partition(':')
    module = importlib.import_module(Path(path).with_suffix('').as_posix().replace('/', '.'))
    return module.get_config(arg) if arg else module.get_config()


def _set(config: Any, override: str) -> None:
    field, _, value = override.partition('=')
    *parents, leaf = field.split('.')
    node = config
    for p in parents:
        node = node[p]
    node[leaf] = type(node[leaf])(value)


def check_budgets(items: tuple[Item, ...]) -> int:
    total = sum(i.budget_s + i.max_batch_budget_s for i in items) + EVAL_BUDGET_S
    if total > TOTAL_BUDGET_S:
        raise ValueError(f'gpu suite: item budgets add up to {total} s, over '
                         f'{TOTAL_BUDGET_S} s')
    return total


# ----------------------------------------------------------------------------- items

def _bench_argv(item: Item, json_out: Path, *, find_max_batch: bool) -> list[str]:
    argv = [sys.executable, '-m', 'dcinet_jax', 'bench', '--config', item.config,
            '--steps', str(item.steps), '--dtype', item.dtype, '--json_out', str(json_out)]
    if find_max_batch:
        argv += ['--find_max_batch', '--steps', '1', '--nocache_check']
    else:
        argv += ['--peer', 'torch'] if item.peer else []
        argv += ['--cache_check' if item.cache_check else '--nocache_check']
    return argv + [f'--config.{o}' for o in item.overrides]


def run_subprocess_item(item: Item, *, find_max_batch: bool = False) -> dict[str, Any]:
    """`dcinet bench` for `item` in a fresh process, killed at its budget."""
    budget = item.max_batch_budget_s if find_max_batch else item.budget_s
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / 'r.json'
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(_bench_argv(item, out, find_max_batch=find_max_batch),
                                  capture_output=True, text=True, timeout=budget)
        except subprocess.TimeoutExpired:
            return {'status': f'over its {budget} s budget'}
        seconds = round(time.perf_counter() - t0, 1)
        if proc.returncode or not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ['no output']
            return {'status': f'failed (exit {proc.returncode}): {tail[0]}',
                    'seconds': seconds}
        return {'status': 'ok', 'seconds': seconds, **json.loads(out.read_text())}


def run_inprocess_item(item: Item) -> dict[str, Any]:
    """The tiny variant: `bench_main` here (no subprocess, no peer, no search)."""
    from dcinet_jax.perf import bench
    config = load_config(item.config)
    for o in item.overrides:
        _set(config, o)
    t0 = time.perf_counter()
    result = bench.bench_main(config, steps=item.steps, dtype=item.dtype, warmup_steps=1,
                              eval_steps=1, cache_check=False, print_table=False)
    return {'status': 'ok', 'seconds': round(time.perf_counter() - t0, 1),
            **json.loads(json.dumps(bench.finite_json(result), default=str))}


# ----------------------------------------------------------------------------- evaluation

def _timed(fn, repeats: int = 2) -> tuple[float, float]:
    """(first call incl. compile, best of the next calls) in seconds."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    best = float('inf')
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return first, best


def eval_throughput(*, tiny: bool) -> dict[str, Any]:
    """Evaluation figures on random data: DSFFN features/s, HSLM pairs/s (score tiles over
    every local device), the full FG-XMedia ranking on the device."""
    from dcinet_jax.evaluators import blockwise, fgxmedia
    from dcinet_jax.methods import dsffn, hslm
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}

    c = load_config('configs/dsffn_test.py' if tiny else 'configs/dsffn_vegas.py')
    model = dsffn.build_model(c)
    variables = jax.tree.map(np.asarray, dsffn.init_variables(model, jax.random.key(0), c))
    n = 256 if tiny else 20000
    vis = rng.normal(size=(n, int(c.data.visual_dim))).astype(np.float32)
    aud = rng.normal(size=(n, int(c.data.audio_dim))).astype(np.float32)
    first, best = _timed(lambda: dsffn.pair_features(model, variables, vis, aud,
                                                 pairing='aligned',
                                                 batch_size=int(c.eval.batch_size)))
    out['dsffn'] = {'pairs': n, 'first_s': first, 'features_per_sec': 2 * n / best}

    c = load_config('configs/hslm_test.py' if tiny else 'configs/hslm_f30k.py')
    c.data_dir = tempfile.gettempdir() + '/no-hslm-data'
    for dtype in ('float32', 'bfloat16'):
        c.model.dtype = dtype
        model = hslm.build_model(c)
        variables = jax.tree.map(np.asarray, hslm.init_variables(model, jax.random.key(0), c))
        e, length = int(c.model.embed_dim), int(c.data.synthetic_length)
        bi, bc = (4, 8) if tiny else (int(c.eval.image_block), int(c.eval.caption_block))
        n_img, n_cap = bi * jax.local_device_count(), 2 * bc
        regions = rng.normal(size=(n_img, int(c.data.num_regions), e)).astype(np.float32)
        words = rng.normal(size=(n_cap, length, e)).astype(np.float32)
        lengths = rng.integers(3, length + 1, n_cap).astype(np.int32)
        first, best = _timed(lambda: blockwise.sharded_score_matrix(
            hslm.tile_scorer(model), variables, regions, (words, lengths),
            image_block=bi, caption_block=bc), repeats=1)
        out[f'hslm_{dtype}'] = {'images': n_img, 'captions': n_cap, 'first_s': first,
                                'pairs_per_sec': n_img * n_cap / best,
                                'devices': jax.local_device_count()}

    sizes = {'image': 64, 'text': 64, 'audio': 64, 'video': 32} if tiny else \
        {'image': 4000, 'text': 4000, 'audio': 4000, 'video': 2000}
    classes = 4 if tiny else 200
    feats = {m: (rng.dirichlet(np.ones(classes), k).astype(np.float32),
                 rng.integers(0, classes, k)) for m, k in sizes.items()}
    t0 = time.perf_counter()
    res = fgxmedia.evaluate_features(feats, scoring='device')
    out['fgxmedia_ranking'] = {'items': sizes, 'classes': classes,
                               'seconds': time.perf_counter() - t0,
                               'bimodal_average': res['bimodal_average']}
    return out


# ----------------------------------------------------------------------------- the run

def run_eval(*, tiny: bool) -> dict[str, Any]:
    """`eval_throughput` here (tiny) or in a subprocess killed at EVAL_BUDGET_S."""
    if tiny:
        try:
            return dict(eval_throughput(tiny=True), status='ok')
        except Exception as e:  # noqa: BLE001 - the train figures are kept either way
            return {'status': f'failed: {type(e).__name__}: {e}'.splitlines()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / 'eval.json'
        try:
            proc = subprocess.run([sys.executable, '-m', __name__, '--eval', str(out)],
                                  capture_output=True, text=True, timeout=EVAL_BUDGET_S)
        except subprocess.TimeoutExpired:
            return {'status': f'over its {EVAL_BUDGET_S} s budget'}
        if proc.returncode or not out.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ['no output']
            return {'status': f'failed (exit {proc.returncode}): {tail[0]}'}
        return dict(json.loads(out.read_text()), status='ok')


def _versions() -> dict[str, str]:
    out = {'python': sys.version.split()[0], 'jax': jax.__version__}
    for name in ('jaxlib', 'flax', 'optax', 'torch'):
        try:
            out[name] = importlib.import_module(name).__version__
        except ImportError:
            out[name] = 'absent'
    return out


def run_suite(*, tiny: bool = False, out_dir: str | Path = 'benchmarks',
              results_md: str | Path | None = None) -> dict[str, Any]:
    """Runs every item, writing `out_dir/gpu_suite.json` after each and, at the end, the
    rows into `results_md` between the gpu-suite markers (when given and present)."""
    items = TINY if tiny else FULL + CONV1X1_PAIR
    if not tiny:
        check_budgets(items)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The parent never initialises the accelerator in the full suite: its memory belongs
    # to the item subprocesses (the device is read from their results).
    suite: dict[str, Any] = {
        'command': 'dcinet bench --suite gpu' + (' --tiny' if tiny else ''),
        'date': time.strftime('%Y-%m-%d %H:%M:%S'), 'tiny': tiny, 'device': '?',
        'versions': _versions(), 'items': {}}
    path = out_dir / 'gpu_suite.json'

    def save() -> None:
        path.write_text(json.dumps(suite, indent=2, default=str))

    t_start = time.perf_counter()
    for item in items:
        print(f'gpu suite: {item.name} ({item.budget_s} s budget)', flush=True)
        result = run_inprocess_item(item) if tiny else run_subprocess_item(item)
        if item.max_batch_budget_s and not tiny:
            search = run_subprocess_item(item, find_max_batch=True)
            result['max_batch'] = search.get('max_batch', {'status': search['status']})
        suite['items'][item.name] = dict(result, budget_s=item.budget_s)
        if suite['device'] == '?' and result.get('status') == 'ok':
            suite['device'] = (f"{result['device_kind']} x {result['device_count']} "
                               f"({result['platform']})")
        save()
    t0 = time.perf_counter()
    suite['eval'] = run_eval(tiny=tiny)
    suite['eval']['seconds'] = round(time.perf_counter() - t0, 1)
    suite['total_s'] = round(time.perf_counter() - t_start, 1)
    save()
    rows = format_rows(suite)
    (out_dir / 'gpu_suite.md').write_text(rows + '\n')
    if results_md is not None:
        write_rows(Path(results_md), rows)
    print(rows, flush=True)
    return suite


def _fmt(value: Any, spec: str) -> str:
    return '–' if value is None else format(value, spec)


def format_rows(suite: dict[str, Any]) -> str:
    """The RESULTS.md block: one row per item, then the evaluation figures."""
    lines = [f"Device {suite['device']}; {', '.join(f'{k} {v}' for k, v in suite['versions'].items())}; "
             f"`{suite['command']}`, {suite['date']}, {suite.get('total_s', '?')} s in all.", '',
             '| item | dtype | b/mod | compile s (cold / warm) | step ms | samples/s | util. '
             '| peak memory GiB | max b/mod | eval features/s | PyTorch samples/s | JAX/PyTorch |'
             ' status |', '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for name, r in suite['items'].items():
        if r.get('status') != 'ok':
            lines.append(f"| {name} | | | | | | | | | | | | {r.get('status')} |")
            continue
        cr, mb, ev, peer = (r.get(k) or {} for k in ('compile_restart', 'max_batch', 'eval',
                                                      'peer'))
        compile_s = _fmt(r.get('compile_s'), '.1f')
        if cr.get('cold'):
            compile_s = f"{cr['cold']['compile_s']:.1f} / {cr['warm']['compile_s']:.1f}"
        mem = r.get('peak_memory_bytes')
        lines.append(
            f"| {name} | {r.get('dtype')} | {r.get('batch_per_modality')} | {compile_s} | "
            f"{_fmt(r.get('step_time_s') and 1e3 * r['step_time_s'], '.1f')} | "
            f"{_fmt(r.get('images_per_sec'), ',.0f')} | "
            f"{_fmt(r.get('utilisation') and 100 * r['utilisation'], '.1f')} % | "
            f"{_fmt(mem and mem / 2 ** 30, '.2f')} | "
            f"{mb.get('max_batch_per_modality', mb.get('status', '–'))} | "
            f"{_fmt(ev.get('eval_images_per_sec'), ',.0f')} | "
            f"{_fmt(peer.get('images_per_sec'), ',.0f')} | "
            f"{_fmt(r.get('jax_over_torch'), '.2f')} | ok ({r.get('seconds')} s) |")
    ev = suite.get('eval', {})
    lines += ['', f"Evaluation ({ev.get('status')}): " + '; '.join(
        [f"DSFFN {ev['dsffn']['features_per_sec']:,.0f} features/s"] if 'dsffn' in ev else [])
        + ''.join(f"; HSLM {d} {ev[f'hslm_{d}']['pairs_per_sec']:,.0f} pairs/s on "
                  f"{ev[f'hslm_{d}']['devices']} device(s)"
                  for d in ('float32', 'bfloat16') if f'hslm_{d}' in ev)
        + (f"; FG-XMedia ranking on the device {ev['fgxmedia_ranking']['seconds']:.1f} s "
           f"({sum(ev['fgxmedia_ranking']['items'].values())} items)"
           if 'fgxmedia_ranking' in ev else '')]
    return '\n'.join(lines)


def write_rows(results_md: Path, rows: str) -> bool:
    """Replaces the text between the gpu-suite markers of `results_md`; False (and
    nothing written) when the file or its markers are missing."""
    if not results_md.is_file():
        return False
    text = results_md.read_text()
    if RESULTS_BEGIN not in text or RESULTS_END not in text:
        return False
    head, rest = text.split(RESULTS_BEGIN, 1)
    _, tail = rest.split(RESULTS_END, 1)
    results_md.write_text(f'{head}{RESULTS_BEGIN}\n{rows}\n{RESULTS_END}{tail}')
    return True


if __name__ == '__main__':   # the full suite's eval phase: python -m ... --eval OUT.json
    if sys.argv[1:2] != ['--eval'] or len(sys.argv) != 3:
        sys.exit(f'usage: python -m {__name__} --eval OUT.json')
    Path(sys.argv[2]).write_text(json.dumps(eval_throughput(tiny=False), default=str))
