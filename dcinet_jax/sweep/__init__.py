"""`dcinet sweep`: a grid of config variants x seeds, each run in its own workdir, and
the mean ± std (n) of every metric over the seeds (docs/sweeps.md).

    plan.py       the grid, written to ROOT/sweep.json (one entry per run)
    run.py        one run = `dcinet train` (+ `dcinet eval` when needed) in subprocesses,
                  ROOT/<variant>/seed<k>/sweep_status.json; sequential or one per GPU
    aggregate.py  ROOT/sweep_results.{json,md}: mean, sample std (ddof=1), n per cell

Launchers: `sequential` (one run after another, any machine), `local_gpus` (one run per
local GPU at a time, CUDA_VISIBLE_DEVICES set per run) and `slurm` (a job array, one
task per plan entry, launch/sweep_array.sbatch). A finished run is never rerun; a killed,
interrupted or failed one is run again (training resumes from its checkpoints).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from dcinet_jax import cli_config, exit_codes
from dcinet_jax.sweep import aggregate, plan as plan_lib, run as run_lib
from dcinet_jax.sweep.plan import SweepError
from dcinet_jax.workdir_lock import WorkdirLock

__all__ = ['SweepError', 'sweep_main']

LAUNCHERS = ('sequential', 'local_gpus', 'slurm')
ROOT_LOCK = 'sweep.lock'   # held by the sweep that plans and runs a root
ARRAY_SCRIPT = Path(__file__).resolve().parents[2] / 'launch' / 'sweep_array.sbatch'


def _evaluator(name: str | None):
    if not name:
        return None
    try:
        from dcinet_jax import evaluators
        return evaluators.get(name)
    except (ValueError, ImportError):
        return None


def _check_configs(plan: dict) -> str | None:
    """Loads every variant's config with the overrides, so that a bad variant or an
    override naming no field stops the sweep before any run starts; returns the
    evaluator of the first run (the results tables use it)."""
    from absl import flags
    from ml_collections import config_flags
    from dcinet_jax import config_fields, methods

    def load(spec, overrides):
        argv = ['dcinet sweep', '--config', spec, *overrides]
        fv = flags.FlagValues()
        config_flags.DEFINE_config_file('config', None, flag_values=fv, sys_argv=argv)
        fv(argv)
        return fv.config

    first = None
    for spec in dict.fromkeys(r['config'] for r in plan['runs']):
        try:   # parsed, not run: missing, syntax error, no get_config, no ARG taken
            cli_config.check_file(spec)
        except ValueError as e:
            raise SweepError(str(e) + (' (each of --variants is such an argument)'
                                       if 'takes no argument' in str(e) else '')) from None
        try:  # the config file alone, then with the overrides
            load(spec, [])
        except Exception as e:  # noqa: BLE001 - any error of the user's config file
            lines = [ln for ln in str(e).splitlines() if ln.strip()] or [repr(e)]
            last = lines[-1].strip()
            raise SweepError(f'--config {spec}: '
                             + (last if ':' in last else f'{type(e).__name__}: {last}')) from None
        try:
            config = load(spec, plan['overrides'])
        except (flags.Error, AttributeError, KeyError) as e:  # an override names no field
            renamed = config_fields.renamed_override(plan['overrides'])
            if renamed:
                raise SweepError(f'--config {spec}: {renamed}') from None
            name = re.search(r"([A-Za-z_][\w.]*)", str(e))
            hint = re.search(r'Did you mean "([\w.]+)"', str(e))
            raise SweepError(f'--config {spec} {" ".join(plan["overrides"])}: no such config '
                             f'field {name.group(1) if name else str(e)!r}'
                             + (f' (did you mean {hint.group(1)}?)' if hint else '')) from None
        first = first or config
    return methods.evaluator_name(methods.from_config(first), first)


def _print(line: str) -> None:
    print(f'[sweep {time.strftime("%H:%M:%S")}] {line}', flush=True)


def _announce(entry: dict, status: dict) -> None:
    where = f'{entry["variant"]} seed {entry["seed"]}'
    if status.get('skipped'):
        _print(f'{where}: finished earlier, skipped')
    elif status['status'] == run_lib.FINISHED:
        _print(f'{where}: finished in {status["seconds"]:.0f} s')
    else:
        _print(f'{where}: {status["status"]} (exit {status["exit_code"]}) after '
               f'{status["seconds"]:.0f} s: {status["last_line"]} '
               f'[{entry["workdir"]}/{run_lib.LOG_FILE}]')


def _run_entry(root: Path, entry: dict, children, env=None) -> dict:
    if not run_lib.is_finished(root / entry['workdir']):
        gpu = f' on GPU {env["CUDA_VISIBLE_DEVICES"]}' if env else ''
        _print(f'{entry["variant"]} seed {entry["seed"]}: starting{gpu} '
               f'({entry["workdir"]}/{run_lib.LOG_FILE})')
    status = run_lib.run_one(root, entry, children, env=env)
    _announce(entry, status)
    return status


def _report(root: Path, plan: dict) -> dict:
    return aggregate.write_report(root, plan, _evaluator(plan.get('evaluator')))


def _summary(root: Path, agg: dict) -> int:
    counts: dict[str, int] = {}
    for r in agg['runs']:
        counts[r['status']] = counts.get(r['status'], 0) + 1
    print(aggregate.format_markdown(agg, None).split('**Runs**')[0].rstrip())
    _print(', '.join(f'{n} {s}' for s, n in sorted(counts.items()))
           + f'; results in {root / aggregate.RESULTS_MD} and {aggregate.RESULTS_JSON}')
    if counts.get(run_lib.FAILED):
        return exit_codes.ERROR
    if len(agg['runs']) != counts.get(run_lib.FINISHED, 0):
        return exit_codes.INTERRUPTED
    return exit_codes.OK


def sweep_main(*, root: str, config: str | None = None, variants: str | None = None,
               seeds: str | None = None, overrides: list[str] = (), launcher: str = 'sequential',
               report_only: bool = False, task: int | None = None) -> int:
    """Plans (or reads) the sweep under `root`, runs what is not finished with the
    launcher, aggregates; returns the exit code (0 all finished, 1 some failed, 75 some
    unfinished or interrupted)."""
    root = Path(root).absolute()
    if launcher not in LAUNCHERS:
        raise SweepError(f'--launcher={launcher!r}: expected one of {LAUNCHERS}')
    if config is None:
        if not report_only and task is None:
            raise SweepError('--config FILE[:ARG] is required (except with --report-only '
                             'or --task on a planned --root)')
        plan = plan_lib.read_plan(root)
    else:
        plan = plan_lib.make_plan(config, plan_lib.parse_list(variants, 'variants'),
                                  plan_lib.parse_seeds('0' if seeds is None else seeds),
                                  list(overrides))
        plan['evaluator'] = _check_configs(plan)
        root.mkdir(parents=True, exist_ok=True)
    if report_only or task is not None:   # read-only, or one task of a SLURM array
        if config is not None:
            with _root_lock(root):
                plan_lib.write_plan(root, plan)
        return _report_or_task(root, plan, task)
    with _root_lock(root):
        if config is not None:
            plan_lib.write_plan(root, plan)
        return _launch(root, plan, launcher)


def _root_lock(root: Path) -> WorkdirLock:
    """One sweep at a time on a root (two would run the same runs side by side); SLURM
    array tasks and --report-only do not take it."""
    return WorkdirLock(root, lock_file=ROOT_LOCK, user='sweep', flag='--root')


def _report_or_task(root: Path, plan: dict, task: int | None) -> int:
    if task is None:
        return _summary(root, _report(root, plan))
    return _run_task(root, plan, task)


def _run_task(root: Path, plan: dict, task: int) -> int:
    """One SLURM array task: plan entry `task`."""
    with run_lib.Children() as children:
        status = _run_entry(root, plan_lib.array_entry(plan, task), children)
    _report(root, plan)
    return {run_lib.FINISHED: exit_codes.OK,
            run_lib.INTERRUPTED: exit_codes.INTERRUPTED}.get(status['status'], exit_codes.ERROR)


def _launch(root: Path, plan: dict, launcher: str) -> int:
    """Runs what is not finished with `launcher`, then aggregates."""
    runs = plan['runs']
    nv, ns = len(plan['variants']), len(plan['seeds'])
    _print(f'{len(runs)} runs ({nv} variant{"s" * (nv != 1)} x {ns} seed{"s" * (ns != 1)}) '
           f'under {root}, launcher {launcher}')
    t0 = time.time()
    if launcher == 'slurm':
        commands = run_lib.slurm_commands(root, len(runs), ARRAY_SCRIPT)
        if shutil.which('sbatch'):
            argv = ['sbatch', '--parsable', f'--array=0-{len(runs) - 1}', str(ARRAY_SCRIPT),
                    str(root)]
            done = subprocess.run(argv, capture_output=True, text=True)
            if done.returncode:
                raise SweepError(f'{" ".join(argv)} failed: {done.stderr.strip()}')
            out = done.stdout.strip()
            _print(f'submitted array job {out}; when it is done: '
                   + commands[1].replace('<ARRAY_JOB_ID>', out.split(';')[0]))
        else:
            _print('sbatch not found; submit with:\n  ' + '\n  '.join(commands))
        return exit_codes.OK
    with run_lib.Children() as children:
        if launcher == 'sequential':
            for entry in runs:
                if children.stopping:
                    break
                _run_entry(root, entry, children)
                _report(root, plan)
        else:
            gpus = run_lib.local_gpu_ids()
            if not gpus:
                raise SweepError('--launcher=local_gpus: no GPU found (CUDA_VISIBLE_DEVICES '
                                 'empty and nvidia-smi -L lists none)')
            _print(f'{len(gpus)} GPU(s): {",".join(gpus)}, one run each at a time')
            run_lib.run_pool(runs, gpus, lambda e, g: _run_entry(
                root, e, children, dict(os.environ, CUDA_VISIBLE_DEVICES=str(g))),
                should_stop=lambda: children.stopping is not None)
    agg = _report(root, plan)
    _print(f'sweep done in {time.time() - t0:.0f} s')
    return _summary(root, agg)
