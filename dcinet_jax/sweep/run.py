"""Running the plan's entries: one run = `dcinet train` (then `dcinet eval` if needed) in
subprocesses, with a status file per run so that a rerun skips what is finished.

Each run is a subprocess so runs share nothing (compile caches, devices, memory) and a
crash stays in its own run. `dcinet train` resumes from its workdir's checkpoints and
evaluates the final step before exiting 0, so a killed or interrupted run simply
continues on the next sweep, and `dcinet eval` is only started when the final step's
results are missing. Status lives in WORKDIR/sweep_status.json; train and eval output
in WORKDIR/run.log (appended across attempts).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from dcinet_jax import exit_codes
from dcinet_jax.evaluators.report import atomic_write_text
from dcinet_jax.sweep.plan import eval_argv, train_argv
from dcinet_jax.workdir_lock import holder_if_busy

STATUS_FILE = 'sweep_status.json'
LOG_FILE = 'run.log'
FINISHED, FAILED, INTERRUPTED, RUNNING = 'finished', 'failed', 'interrupted', 'running'


def read_status(workdir: Path) -> dict | None:
    try:
        return json.loads((Path(workdir) / STATUS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def final_results(workdir: Path) -> dict | None:
    """WORKDIR/eval/results.json (the latest evaluation), None when absent or unreadable."""
    try:
        return json.loads((Path(workdir) / 'eval' / 'results.json').read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_finished(workdir: Path) -> bool:
    """Finished = status 'finished' and the results of its final step are on disk."""
    status, results = read_status(workdir), final_results(workdir)
    return bool(status and status.get('status') == FINISHED and results
                and results.get('step') == status.get('step'))


def _write_status(workdir: Path, **fields) -> dict:
    atomic_write_text(Path(workdir) / STATUS_FILE, json.dumps(fields, indent=2) + '\n')
    return fields


def _last_line(log: Path, offset: int) -> str:
    """The attempt's last log line that says something (the error, for a failed run)."""
    with open(log, 'rb') as f:
        f.seek(offset)
        lines = [ln.strip() for ln in f.read().decode('utf-8', 'replace').splitlines()]
    return next((ln for ln in reversed(lines)
                 if ln and not ln.startswith('(set DCINET_TRACEBACK')), '')


def _train_summary(log: Path, offset: int) -> dict:
    """The JSON summary line `dcinet train` prints last (step, total_steps, ...)."""
    with open(log, 'rb') as f:
        f.seek(offset)
        text = f.read().decode('utf-8', 'replace')
    for line in reversed(text.splitlines()):
        if line.startswith('{') and '"total_steps"' in line:
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                break
    return {}


class Children:
    """The live run subprocesses; SIGTERM/SIGINT to the sweep is passed on to them (each
    training saves and exits 75) and no further run starts."""

    def __init__(self):
        self.procs: set[subprocess.Popen] = set()
        self.stopping: int | None = None
        # Reentrant: the handler runs in the main thread, possibly while it holds the lock.
        self._lock = threading.RLock()
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        self.stopping = signum
        with self._lock:
            for p in list(self.procs):
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)

    def run(self, argv: list[str], log: Path, env: dict) -> int:
        with open(log, 'ab') as out:
            out.write(f'\n=== dcinet {" ".join(argv)}\n'.encode())
            out.flush()
            with self._lock:
                p = subprocess.Popen([sys.executable, '-m', 'dcinet_jax', *argv],
                                     stdout=out, stderr=subprocess.STDOUT, env=env)
                self.procs.add(p)
                if self.stopping:  # the signal came while this run was starting
                    p.send_signal(signal.SIGTERM)
            try:
                return p.wait()
            finally:
                with self._lock:
                    self.procs.discard(p)


def run_one(root: Path, entry: dict, children: Children, *, env: dict | None = None) -> dict:
    """Runs one plan entry to its end (or skips it when finished); returns its status."""
    workdir = Path(root) / entry['workdir']
    if is_finished(workdir):
        return dict(read_status(workdir), skipped=True)
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / LOG_FILE
    offset = log.stat().st_size if log.exists() else 0
    previous = read_status(workdir) or {}
    common = dict(variant=entry['variant'], seed=entry['seed'], log=LOG_FILE,
                  host=socket.gethostname(), attempt=previous.get('attempt', 0) + 1,
                  started=time.strftime('%Y-%m-%dT%H:%M:%S'))
    holder = holder_if_busy(workdir)
    if holder is not None:
        # A training of this run is still alive (left by a sweep killed with -9): starting
        # another would fail on the workdir lock, and the live one's log lines would be
        # read as that failure's reason. Say so; the next sweep continues the run.
        return _write_status(
            workdir, status=INTERRUPTED, exit_code=exit_codes.INTERRUPTED, step=None,
            seconds=0.0, last_line=f'a training of this run is still going ({holder}), '
            'probably left by an earlier sweep; wait for it or stop it, then rerun the sweep',
            **dict(common, attempt=previous.get('attempt', 0)))
    _write_status(workdir, status=RUNNING, pid=os.getpid(), **common)
    env = dict(os.environ if env is None else env)
    t0 = time.time()
    rc = children.run(train_argv(entry, workdir), log, env)
    summary = _train_summary(log, offset) if rc == exit_codes.OK else {}
    step = summary.get('step')
    if rc == exit_codes.OK and step is not None and (final_results(workdir) or {}).get(
            'step') != step:  # train evaluates its final step; should that be missing:
        rc = children.run(eval_argv(entry, workdir, step), log, env)
    results = final_results(workdir) or {}
    if rc == exit_codes.OK and (step is None or results.get('step') != step):
        rc, note = exit_codes.ERROR, f'no results for the final step {step} after train and eval'
    else:
        note = None if rc == exit_codes.OK else _last_line(log, offset)
    state = (FINISHED if rc == exit_codes.OK
             else INTERRUPTED if rc == exit_codes.INTERRUPTED or children.stopping else FAILED)
    return _write_status(workdir, status=state, exit_code=rc, step=step if state == FINISHED
                         else None, seconds=round(time.time() - t0, 1), last_line=note,
                         **common)


def run_pool(entries: list, slots: list, run: Callable[[object, object], object],
             should_stop: Callable[[], bool] = lambda: False) -> list:
    """Runs every entry on one free slot at a time (slot = a GPU id); returns the
    results in entry order. A slot takes the next pending entry as soon as it is free;
    once `should_stop()` is true no entry starts (its result stays None)."""
    if not slots:
        raise ValueError('run_pool: no slots to run on')
    free: queue.Queue = queue.Queue()
    for s in slots:
        free.put(s)
    results: list = [None] * len(entries)
    threads = []

    def work(i, entry, slot):
        try:
            results[i] = run(entry, slot)
        finally:
            free.put(slot)

    for i, entry in enumerate(entries):
        slot = free.get()
        if should_stop():
            break
        t = threading.Thread(target=work, args=(i, entry, slot), daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    return results


def local_gpu_ids(env: dict | None = None) -> list[str]:
    """The GPUs to spread runs over: CUDA_VISIBLE_DEVICES when set, else `nvidia-smi -L`."""
    env = os.environ if env is None else env
    visible = env.get('CUDA_VISIBLE_DEVICES')
    if visible is not None:
        return [g.strip() for g in visible.split(',') if g.strip() and g.strip() != '-1']
    if shutil.which('nvidia-smi') is None:
        return []
    out = subprocess.run(['nvidia-smi', '-L'], capture_output=True, text=True).stdout
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith('GPU ')]


def slurm_commands(root: Path, n_runs: int, script: Path) -> list[str]:
    """The sbatch command of the array (one task per plan entry) and of the report job."""
    return [f'sbatch --array=0-{n_runs - 1} {script} {root}',
            f'sbatch --dependency=afterany:<ARRAY_JOB_ID> --wrap '
            f'"{sys.executable} -m dcinet_jax sweep --root {root} --report-only"']
