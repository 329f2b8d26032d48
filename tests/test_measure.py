"""benchmarks/measure.py: the figures of the full-size rows of RESULTS.md, checked on a
child process whose memory, open files and written bytes are known."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The child holds 200 MiB of touched anonymous memory and 30 extra open files (its
# children included: one grandchild holds the files) for a second, then writes 3 MiB.
CHILD = r'''
import os, subprocess, sys, time
block = bytearray(200 * 2**20)
for i in range(0, len(block), 4096):
    block[i] = 1
holder = subprocess.Popen([sys.executable, '-c',
    "import time; fs = [open('/dev/null') for _ in range(30)]; time.sleep(1.5)"])
time.sleep(1.2)
holder.wait()
with open(os.path.join(sys.argv[1], 'out.bin'), 'wb') as f:
    f.write(b'x' * 3 * 2**20)
sys.exit(3)
'''


def test_measure_reports_the_tree_peaks_the_disk_and_the_exit_code(tmp_path):
    out, work = tmp_path / 'figures.json', tmp_path / 'w'
    work.mkdir()
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'benchmarks' / 'measure.py'), '--interval', '0.05',
         '--du', str(work), '--json_out', str(out), '--', sys.executable, '-c', CHILD,
         str(work)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr         # the command's status is passed on
    d = json.loads(out.read_text())
    assert d['exit_code'] == 3
    assert 200 <= d['peak_anon_rss_mb'] <= d['peak_rss_mb'] < 1000, d
    assert d['peak_open_fds'] >= 30, d
    assert d['disk_mb'] == {str(work): 3.0}
    assert 1.0 < d['wall_s'] < 30 and len(d['load_before']) == 3
