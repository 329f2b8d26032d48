"""The sweep's plan: a grid of config variants x seeds, written once to ROOT/sweep.json.

Every consumer of a sweep reads the same file: the sequential and local-GPU launchers,
each SLURM array task (`--task I` runs entry I of the plan), and `--report-only`. One
entry per run, in variant-major order, each with its own workdir relative to ROOT (the
root can be moved) and the exact `dcinet train` arguments, so that a workdir is a plain
one that `dcinet train` / `dcinet eval` can open by hand.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from dcinet_jax.evaluators.report import atomic_write_text

PLAN_FILE = 'sweep.json'
PLAN_VERSION = 1
_UNSAFE = re.compile(r'[^A-Za-z0-9@._+=-]')


class SweepError(ValueError):
    """A sweep that cannot be planned or read: the message names the flag or file."""


def parse_list(text: str | None, what: str) -> list[str]:
    """'a,b, c' -> ['a', 'b', 'c']; an empty item is an error naming the flag."""
    if text is None or not str(text).strip():
        return []
    items = [s.strip() for s in str(text).split(',')]
    if any(not s for s in items):
        raise SweepError(f'--{what}={text!r}: empty item in the comma-separated list')
    return items


def parse_seeds(text: str) -> list[int]:
    seeds = []
    for item in parse_list(text, 'seeds'):
        try:
            seeds.append(int(item))
        except ValueError:
            raise SweepError(f'--seeds: {item!r} is not an integer') from None
    if not seeds:
        raise SweepError('--seeds: give at least one seed, e.g. --seeds 0,1,2')
    if len(set(seeds)) != len(seeds):
        raise SweepError(f'--seeds: {text!r} repeats a seed')
    return seeds


def variant_dirname(config_file: str, variant: str) -> str:
    """The folder of a variant under ROOT: the config ARG, or the file's stem without one."""
    name = variant or Path(config_file).stem
    return _UNSAFE.sub('_', name)


def make_plan(config: str, variants: list[str], seeds: list[int], overrides: list[str],
              *, evaluator: str | None = None) -> dict:
    """The plan of `config` (FILE or FILE:ARG) x `variants` (ARGs replacing ARG) x seeds.

    `overrides` are `--config.field=value` arguments given to every run; the seed is set
    per run with `--config.seed=K`, so an override of the seed is refused.
    """
    file, _, arg = str(config).partition(':')
    path = Path(file)
    if not path.is_file():
        raise SweepError(f'--config: no such file {file!r}')
    variants = variants or [arg]
    if len(set(variants)) != len(variants):
        raise SweepError(f'--variants: {",".join(variants)!r} repeats a variant')
    for o in overrides:
        if not o.startswith('--config.') or '=' not in o:
            raise SweepError(f'{o!r}: overrides are --config.field=value')
        if o.split('=')[0] == '--config.seed':
            raise SweepError(f'{o!r}: the seed is set per run; use --seeds')
    dirs = [variant_dirname(file, v) for v in variants]
    if len(set(dirs)) != len(dirs):
        raise SweepError(f'--variants: two variants map to the same folder ({dirs})')
    runs = []
    for variant, folder in zip(variants, dirs):
        spec = f'{path.resolve()}:{variant}' if variant else str(path.resolve())
        for seed in seeds:
            runs.append({'index': len(runs), 'variant': variant or folder, 'seed': seed,
                         'workdir': f'{folder}/seed{seed}', 'config': spec,
                         'overrides': [f'--config.seed={seed}', *overrides]})
    return {'version': PLAN_VERSION, 'config': str(path.resolve()),
            'variants': [v or d for v, d in zip(variants, dirs)], 'seeds': list(seeds),
            'overrides': list(overrides), 'evaluator': evaluator, 'runs': runs}


def write_plan(root: str | Path, plan: dict) -> Path:
    """Writes ROOT/sweep.json. A root planned before with another config or other
    overrides is refused (its finished runs would be mixed into the new grid)."""
    path = Path(root) / PLAN_FILE
    if path.exists():
        old = read_plan(root)
        for key in ('config', 'overrides'):
            if old[key] != plan[key]:
                raise SweepError(
                    f'{path}: this root was planned with {key} {old[key]!r}, not '
                    f'{plan[key]!r}; use another --root (or the same {key})')
    atomic_write_text(path, json.dumps(plan, indent=2) + '\n')
    return path


def read_plan(root: str | Path) -> dict:
    path = Path(root) / PLAN_FILE
    if not path.is_file():
        raise SweepError(f'{path}: no sweep plan here (run `dcinet sweep --config ...` first)')
    try:
        plan = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SweepError(f'{path}: not valid JSON ({e})') from None
    if plan.get('version') != PLAN_VERSION or not isinstance(plan.get('runs'), list):
        raise SweepError(f'{path}: not a version-{PLAN_VERSION} sweep plan')
    return plan


def array_entry(plan: dict, task_id: int | str) -> dict:
    """The plan entry an array task runs: SLURM_ARRAY_TASK_ID I -> runs[I]."""
    try:
        index = int(task_id)
    except (TypeError, ValueError):
        raise SweepError(f'array task id {task_id!r} is not an integer') from None
    if not 0 <= index < len(plan['runs']):
        raise SweepError(f'array task id {index} is outside the plan\'s runs '
                         f'0..{len(plan["runs"]) - 1}')
    return plan['runs'][index]


def train_argv(entry: dict, workdir: Path) -> list[str]:
    """`dcinet train` arguments of one run (after `python -m dcinet_jax`)."""
    return ['train', '--config', entry['config'], '--workdir', str(workdir),
            '--progress=false', *entry['overrides']]


def eval_argv(entry: dict, workdir: Path, step: int) -> list[str]:
    """`dcinet eval` arguments of one run's checkpoint `step`."""
    return ['eval', '--config', entry['config'], '--workdir', str(workdir), f'--step={step}',
            *entry['overrides']]
