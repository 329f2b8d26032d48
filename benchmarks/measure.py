"""Run one command and report what it cost: wall time, peak memory, peak open files.

The full-size rows of RESULTS.md ("Data at full size") come from this wrapper, so any
of them can be re-measured the same way on another machine:

    python benchmarks/measure.py [--interval 0.25] [--du DIR ...] [--json_out F] -- CMD ARGS...

Every `--interval` seconds it sums over the command's whole process tree (the command,
its workers, their children) the resident set, the anonymous part of it (the resident
set less its file-backed and shared pages: what a memory map of a file on disk does not
count against), and the open file descriptors, and keeps the peaks. Processes that
start and end between two samples are missed, so peaks are lower bounds on very short
work. It also records the load average before and after (the figures of a loaded
machine are not comparable with an idle one's) and, with `--du`, the bytes under each
given directory when the command has finished.

Linux only (psutil reads /proc); the command's exit status is passed on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil


def _tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root] + root.children(recursive=True)
    except psutil.Error:
        return []


def _sample(root: psutil.Process) -> tuple[int, int, int]:
    """(resident bytes, anonymous resident bytes, open descriptors) of the tree now."""
    rss = anon = fds = 0
    for p in _tree(root):
        try:
            m = p.memory_info()
            rss += m.rss
            anon += max(m.rss - getattr(m, 'shared', 0), 0)
            fds += p.num_fds()
        except psutil.Error:   # ended between listing and reading
            continue
    return rss, anon, fds


def disk_usage(path: str | os.PathLike) -> int:
    """Bytes of the regular files under `path` (what `du --apparent-size -b` counts)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


def measure(cmd: list[str], *, interval: float = 0.25, du: list[str] = ()) -> dict:
    """Run `cmd`, sampling its process tree; the figures as a dict."""
    load_before = os.getloadavg()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    root = psutil.Process(proc.pid)
    peak = [0, 0, 0]
    while proc.poll() is None:
        peak = [max(a, b) for a, b in zip(peak, _sample(root))]
        time.sleep(interval)
    wall = time.perf_counter() - start
    return {
        'command': cmd, 'exit_code': proc.returncode, 'wall_s': round(wall, 2),
        'peak_rss_mb': round(peak[0] / 2**20, 1), 'peak_anon_rss_mb': round(peak[1] / 2**20, 1),
        'peak_open_fds': peak[2], 'interval_s': interval,
        'load_before': [round(x, 2) for x in load_before],
        'load_after': [round(x, 2) for x in os.getloadavg()],
        'cpus': os.cpu_count(),
        'disk_mb': {d: round(disk_usage(d) / 2**20, 1) for d in du},
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if '--' not in argv:
        print('usage: measure.py [--interval S] [--du DIR ...] [--json_out F] -- CMD ...',
              file=sys.stderr)
        return 2
    cut = argv.index('--')
    parser = argparse.ArgumentParser(prog='measure.py')
    parser.add_argument('--interval', type=float, default=0.25)
    parser.add_argument('--du', action='append', default=[])
    parser.add_argument('--json_out', default='')
    args = parser.parse_args(argv[:cut])
    cmd = argv[cut + 1:]
    if not cmd:
        parser.error('no command after --')
    result = measure(cmd, interval=args.interval, du=args.du)
    text = json.dumps(result, indent=1)
    print(text, file=sys.stderr)
    if args.json_out:
        Path(args.json_out).write_text(text + '\n')
    code = int(result['exit_code'])
    return code if code >= 0 else 128 - code   # killed by a signal: 128 + signal number


if __name__ == '__main__':
    sys.exit(main())
