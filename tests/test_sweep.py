"""`dcinet sweep`: the plan and its array-task mapping, the GPU pool, aggregation against
mean/std computed here with numpy (ddof=1), failed runs reported and left out of the
means, and a real sweep of the tiny MLP method (tests/tiny_method.py) that is interrupted
by a failing run and resumes without rerunning the finished one.
"""

import fcntl
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import tiny_method  # noqa: F401 - registers the 'accuracy' evaluator
from dcinet_jax.sweep import aggregate, plan as plan_lib, run as run_lib, sweep_main
from dcinet_jax.sweep.plan import SweepError

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
CONFIG = '''import tiny_method
def get_config(arg='a'):
    c = tiny_method.get_config(4)
    c.optim.learning_rate = {'a': 0.05, 'b': 0.01}[arg]
    return c
'''


@pytest.fixture(scope='module')
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp('sweep_config') / 'tiny_sweep.py'
    path.write_text(CONFIG)
    return path


def _env():
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    env['PYTHONPATH'] = os.pathsep.join([str(TESTS), str(REPO), env.get('PYTHONPATH', '')])
    return env


def _sweep(*args):
    return subprocess.run([sys.executable, '-m', 'dcinet_jax', 'sweep', *args], env=_env(),
                          capture_output=True, text=True, timeout=300)


def test_plan_grid_workdirs_and_array_task_mapping(config_file, tmp_path):
    plan = plan_lib.make_plan(f'{config_file}:a', ['a', 'b'], [0, 1, 2],
                              ['--config.batch=4'])
    assert [(r['variant'], r['seed']) for r in plan['runs']] == [
        ('a', 0), ('a', 1), ('a', 2), ('b', 0), ('b', 1), ('b', 2)]
    entry = plan_lib.array_entry(plan, '4')  # SLURM_ARRAY_TASK_ID arrives as a string
    assert entry['index'] == 4 and entry['workdir'] == 'b/seed1'
    assert entry['config'] == f'{config_file.resolve()}:b'
    assert plan_lib.train_argv(entry, Path('W')) == [
        'train', '--config', f'{config_file.resolve()}:b', '--workdir', 'W',
        '--progress=false', '--config.seed=1', '--config.batch=4']
    with pytest.raises(SweepError, match=r'array task id 6 is outside .* 0\.\.5'):
        plan_lib.array_entry(plan, 6)
    # No ARG and no --variants: one variant named after the file.
    single = plan_lib.make_plan(str(config_file), [], [3], [])
    assert [r['workdir'] for r in single['runs']] == ['tiny_sweep/seed3']
    with pytest.raises(SweepError, match='the seed is set per run; use --seeds'):
        plan_lib.make_plan(str(config_file), [], [0], ['--config.seed=1'])
    with pytest.raises(SweepError, match='repeats a seed'):
        plan_lib.parse_seeds('0,1,0')
    # A root keeps its config and overrides: another is refused, naming both.
    plan_lib.write_plan(tmp_path, plan)
    other = plan_lib.make_plan(f'{config_file}:a', ['a'], [0], ['--config.batch=8'])
    with pytest.raises(SweepError, match=r"planned with overrides \['--config.batch=4'\]"):
        plan_lib.write_plan(tmp_path, other)


def test_slurm_launcher_writes_the_plan_and_prints_the_array_command(config_file, tmp_path,
                                                                     capsys, monkeypatch):
    monkeypatch.setenv('PATH', str(tmp_path))  # no sbatch on this PATH
    rc = sweep_main(root=str(tmp_path / 'root'), config=f'{config_file}:a', variants='a,b',
                    seeds='0,1,2', launcher='slurm')
    out = capsys.readouterr().out
    assert rc == 0
    assert f'sbatch --array=0-5 {REPO / "launch" / "sweep_array.sbatch"} {tmp_path / "root"}' in out
    plan = plan_lib.read_plan(tmp_path / 'root')
    assert len(plan['runs']) == 6 and plan['evaluator'] == 'accuracy'
    assert not (tmp_path / 'root' / 'a').exists()  # nothing ran here
    # With sbatch on the PATH the array is submitted: one task per plan entry.
    fake = tmp_path / 'sbatch'
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "args"}\necho 4242\n')
    fake.chmod(0o755)
    assert sweep_main(root=str(tmp_path / 'root'), launcher='slurm', task=None,
                      config=f'{config_file}:a', variants='a,b', seeds='0,1,2') == 0
    assert (tmp_path / 'args').read_text().split() == [
        '--parsable', '--array=0-5', str(REPO / 'launch' / 'sweep_array.sbatch'),
        str(tmp_path / 'root')]
    assert 'afterany:4242' in capsys.readouterr().out


def test_gpu_pool_never_shares_a_gpu_and_runs_everything():
    busy, log, lock = set(), [], threading.Lock()

    def fake_run(entry, gpu):
        with lock:
            assert gpu not in busy, f'GPU {gpu} given to two runs at once'
            busy.add(gpu)
        time.sleep(0.01 * (entry % 3))
        with lock:
            busy.discard(gpu)
            log.append((entry, gpu))
        return entry * 10

    assert run_lib.run_pool(list(range(7)), ['0', '1', '2'], fake_run) == [
        0, 10, 20, 30, 40, 50, 60]
    assert sorted(e for e, _ in log) == list(range(7)) and {g for _, g in log} == {'0', '1', '2'}
    # Once stopping, no further entry starts.
    started = []
    results = run_lib.run_pool(list(range(5)), ['0'], lambda e, g: started.append(e) or e,
                               should_stop=lambda: len(started) >= 2)
    assert started == [0, 1] and results == [0, 1, None, None, None]
    assert run_lib.local_gpu_ids({'CUDA_VISIBLE_DEVICES': '2, 5'}) == ['2', '5']
    assert run_lib.local_gpu_ids({'CUDA_VISIBLE_DEVICES': ''}) == []


def _fake_run(root, entry, results, status='finished', exit_code=0):
    workdir = Path(root) / entry['workdir']
    (workdir / 'eval').mkdir(parents=True)
    if results is not None:
        (workdir / 'eval' / 'results.json').write_text(json.dumps({'step': 9, **results}))
    (workdir / 'sweep_status.json').write_text(json.dumps(
        {'status': status, 'exit_code': exit_code, 'step': 9, 'seconds': 1.0,
         'last_line': None if status == 'finished' else 'boom: it broke', 'log': 'run.log'}))


def _fg_results(rng):
    bi = {k: float(v) for k, v in zip(('i2t', 'i2a', 't2i', 't2a', 'a2i', 'a2t'), rng.random(6))}
    multi = {k: float(v) for k, v in zip(('i2all', 't2all', 'a2all'), rng.random(3))}
    return {'bimodal': bi, 'multimodal': multi, 'bimodal_average': float(np.mean(list(bi.values()))),
            'multimodal_average': float(np.mean(list(multi.values()))),
            'protocol': {'counts': {'image': 120}}}


def test_aggregation_matches_hand_computed_mean_and_sample_std(tmp_path):
    plan = plan_lib.make_plan(str(REPO / 'configs' / 'ablations.py'), ['cmsi', 'cmci'],
                              [0, 1, 2], [])
    rng = np.random.default_rng(0)
    written = {}
    for entry in plan['runs']:
        res = _fg_results(rng)
        if (entry['variant'], entry['seed']) == ('cmsi', 1):  # failed: must not count
            _fake_run(tmp_path, entry, res, status='failed', exit_code=3)
        elif (entry['variant'], entry['seed']) == ('cmci', 2):  # never ran
            pass
        else:
            _fake_run(tmp_path, entry, res)
            written[(entry['variant'], entry['seed'])] = res
    agg = aggregate.write_report(tmp_path, plan)
    for variant, seeds in (('cmsi', (0, 2)), ('cmci', (0, 1))):
        got = agg['variants'][variant]
        assert got['n'] == 2 and got['seeds'] == list(seeds)
        for task in ('i2t', 'a2t'):
            vals = [written[(variant, s)]['bimodal'][task] for s in seeds]
            mean = sum(vals) / 2
            std = (sum((v - mean) ** 2 for v in vals) / (2 - 1)) ** 0.5  # ddof=1, by hand
            m = got['metrics'][f'bimodal.{task}']
            assert m['mean'] == pytest.approx(mean, abs=1e-12)
            assert m['std'] == pytest.approx(std, abs=1e-12)
            assert m['n'] == 2
        assert 'protocol.counts.image' not in got['metrics'] and 'step' not in got['metrics']
    left = agg['variants']['cmsi']['left_out']
    assert [(r['seed'], r['status'], r['exit_code'], r['last_line']) for r in left] == [
        (1, 'failed', 3, 'boom: it broke')]
    assert agg['variants']['cmci']['left_out'][0]['status'] == 'pending'
    md = (tmp_path / 'sweep_results.md').read_text()
    m = agg['variants']['cmsi']['metrics']['multimodal_average']
    assert '| cmsi (n=2, 1 failed) |' in md and f'{m["mean"]:.3f} ± {m["std"]:.3f} |' in md
    assert '| DCINet (paper, ResNet50 layer4, real FG-XMedia) | 0.242 |' in md  # paper beside
    assert '| cmsi | 1 | failed | 3 |' in md
    on_disk = json.loads((tmp_path / 'sweep_results.json').read_text())
    assert on_disk['variants']['cmci']['metrics']['bimodal.i2t']['std'] == pytest.approx(
        agg['variants']['cmci']['metrics']['bimodal.i2t']['std'])
    # n = 1: the mean alone, the std shown as '–' (None in the JSON).
    one = aggregate.summarize([0.5])
    assert one == {'mean': 0.5, 'std': None, 'n': 1, 'values': [0.5]}
    assert aggregate.cell(one) == '0.500 ± –'


def test_generic_evaluator_gets_a_metric_by_variant_table(tmp_path, config_file):
    plan = plan_lib.make_plan(f'{config_file}:a', ['a', 'b'], [0, 1], [])
    vals = {('a', 0): 0.5, ('a', 1): 0.7, ('b', 0): 0.2, ('b', 1): 0.3}
    for entry in plan['runs']:
        _fake_run(tmp_path, entry, {'accuracy': vals[(entry['variant'], entry['seed'])],
                                    'nested': {'x': 1.0}, 'flag': True})
    agg = aggregate.aggregate(tmp_path, plan)
    md = aggregate.format_markdown(agg, tiny_method.Accuracy)
    assert '| accuracy | 0.600 ± 0.141 | 0.250 ± 0.071 |' in md  # std([.5, .7], ddof=1)
    assert '| nested.x |' in md and 'flag' not in md
    assert '| a (mean) | accuracy 0.600 |' in md  # the evaluator's own table of the means


def test_real_sweep_reports_a_failed_run_and_resumes_without_rerunning(config_file, tmp_path):
    root = tmp_path / 'root'
    busy = root / 'a' / 'seed1'
    busy.mkdir(parents=True)
    holder = open(busy / 'train.lock', 'w')  # a live run holds seed 1: it is not started
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    holder.write(json.dumps({'pid': os.getpid(), 'host': 'test'}))
    holder.flush()
    args = ['--config', f'{config_file}:a', '--seeds', '0,1', '--root', str(root),
            '--config.batch=4']
    first = _sweep(*args)
    holder.close()
    # Unfinished, not failed (exit 75: rerun later), and the live run named as the reason.
    assert first.returncode == 75, first.stdout + first.stderr
    assert 'a seed 1: interrupted (exit 75)' in first.stdout
    agg = json.loads((root / 'sweep_results.json').read_text())
    a = agg['variants']['a']
    assert a['n'] == 1 and a['metrics']['accuracy']['std'] is None
    assert a['left_out'][0]['seed'] == 1
    assert a['left_out'][0]['last_line'].startswith(
        f'a training of this run is still going (pid {os.getpid()} on host test')
    assert not (busy / 'run.log').exists()            # no train started beside it
    status0 = json.loads((root / 'a' / 'seed0' / 'sweep_status.json').read_text())
    assert status0['status'] == 'finished' and status0['step'] == 4
    mtime0 = (root / 'a' / 'seed0' / 'eval' / 'results.json').stat().st_mtime_ns

    second = _sweep(*args)  # the lock is gone: seed 1 runs, seed 0 is not rerun
    assert second.returncode == 0, second.stdout + second.stderr
    assert 'a seed 0: finished earlier, skipped' in second.stdout
    assert (root / 'a' / 'seed0' / 'run.log').read_text().count('=== dcinet train') == 1
    assert (root / 'a' / 'seed0' / 'eval' / 'results.json').stat().st_mtime_ns == mtime0
    status1 = json.loads((root / 'a' / 'seed1' / 'sweep_status.json').read_text())
    assert status1['status'] == 'finished' and status1['attempt'] == 1
    accs = [json.loads((root / 'a' / f'seed{s}' / 'eval' / 'results.json').read_text())
            ['accuracy'] for s in (0, 1)]
    got = json.loads((root / 'sweep_results.json').read_text())['variants']['a']
    assert got['n'] == 2 and got['metrics']['accuracy']['mean'] == pytest.approx(np.mean(accs))
    assert got['metrics']['accuracy']['std'] == pytest.approx(np.std(accs, ddof=1))

    # --report-only and a SLURM array task (the script, with the finished entry 0) touch
    # no finished run.
    (root / 'sweep_results.md').unlink()
    assert _sweep('--root', str(root), '--report-only').returncode == 0
    assert '| a (n=2) |' in (root / 'sweep_results.md').read_text()
    task = subprocess.run(['bash', str(REPO / 'launch' / 'sweep_array.sbatch'), str(root)],
                          env=dict(_env(), SLURM_ARRAY_TASK_ID='0', PYTHON=sys.executable),
                          capture_output=True, text=True, timeout=120)
    assert task.returncode == 0, task.stdout + task.stderr
    assert 'a seed 0: finished earlier, skipped' in task.stdout
    assert (root / 'a' / 'seed0' / 'run.log').read_text().count('=== dcinet train') == 1


def test_sigterm_to_the_sweep_saves_the_run_and_the_rerun_resumes_it(config_file, tmp_path):
    root = tmp_path / 'root'
    args = ['--config', f'{config_file}:b', '--seeds', '0', '--root', str(root),
            '--config.batch=4', '--config.num_train_steps=8', '--config.batch_delay=0.3']
    proc = subprocess.Popen([sys.executable, '-m', 'dcinet_jax', 'sweep', *args], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first_ckpt = root / 'b' / 'seed0' / 'checkpoints' / '2'
    deadline = time.time() + 120
    while not first_ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(subprocess.signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 75, out
    status = json.loads((root / 'b' / 'seed0' / 'sweep_status.json').read_text())
    assert status['status'] == 'interrupted' and status['exit_code'] == 75
    assert 'b seed 0: interrupted (exit 75)' in out

    again = _sweep(*args)
    assert again.returncode == 0, again.stdout + again.stderr
    log = (root / 'b' / 'seed0' / 'run.log').read_text()
    assert log.count('=== dcinet train') == 2 and 'resuming from step' in log
    assert json.loads((root / 'b' / 'seed0' / 'eval' / 'results.json').read_text())['step'] == 8


def test_a_bad_variant_or_override_stops_the_sweep_before_anything_runs(config_file, tmp_path):
    with pytest.raises(SweepError, match=r":zz: KeyError: 'zz'"):
        sweep_main(root=str(tmp_path / 'r1'), config=str(config_file), variants='a,zz')
    with pytest.raises(SweepError, match=r"no such config field 'learning_rat' "
                                         r'\(did you mean learning_rate\?\)'):
        sweep_main(root=str(tmp_path / 'r2'), config=f'{config_file}:a',
                   overrides=['--config.optim.learning_rat=1'])
    assert not (tmp_path / 'r1').exists() and not (tmp_path / 'r2').exists()


class _ScriptedChildren(run_lib.Children):
    """Plays back commands instead of starting processes: train prints its summary but
    leaves no results (as if its evaluation were lost), eval writes them."""

    def __init__(self, write_results_on_eval=True):
        super().__init__()
        self.calls, self.write = [], write_results_on_eval

    def run(self, argv, log, env):
        self.calls.append(argv[0] if argv[0] == 'train' else ' '.join(argv[:1] + argv[5:6]))
        with open(log, 'a') as f:
            f.write('{"step": 6, "total_steps": 6}\n' if argv[0] == 'train' else 'evaluated\n')
        if argv[0] == 'eval' and self.write:
            (log.parent / 'eval').mkdir(exist_ok=True)
            (log.parent / 'eval' / 'results.json').write_text('{"step": 6, "accuracy": 0.5}')
        return 0


def test_missing_final_results_are_evaluated_and_still_missing_is_a_failure(tmp_path):
    entry = plan_lib.make_plan(str(REPO / 'configs' / 'demo.py'), [], [0], [])['runs'][0]
    children = _ScriptedChildren()
    status = run_lib.run_one(tmp_path, entry, children)
    assert children.calls == ['train', 'eval --step=6']
    assert status['status'] == 'finished' and status['step'] == 6
    assert run_lib.is_finished(tmp_path / entry['workdir'])
    assert run_lib.run_one(tmp_path, entry, children)['skipped'] and len(children.calls) == 2

    children = _ScriptedChildren(write_results_on_eval=False)
    status = run_lib.run_one(tmp_path / 'other', entry, children)
    assert status['status'] == 'failed' and status['exit_code'] == 1
    assert status['last_line'] == 'no results for the final step 6 after train and eval'


def test_empty_seeds_and_variants_of_a_config_without_argument_are_one_line(tmp_path):
    """Issue 22: `--seeds ''` ran seed 0; `--variants` on a get_config() without an
    argument was a Python TypeError."""
    plain = tmp_path / 'plain.py'
    plain.write_text('import tiny_method\ndef get_config():\n    return tiny_method.get_config(4)\n')
    with pytest.raises(SweepError, match=r'^--seeds: give at least one seed'):
        sweep_main(root=str(tmp_path / 'r0'), config=str(plain), seeds='')
    with pytest.raises(SweepError, match=r"^--config .*plain.py:a: .*plain.py's get_config\(\) "
                       r'takes no argument; drop ":a" \(each of --variants is such an '
                       r'argument\)$'):
        sweep_main(root=str(tmp_path / 'r1'), config=str(plain), variants='a,b')
    assert not (tmp_path / 'r0').exists() and not (tmp_path / 'r1').exists()
    done = _sweep('--config', str(plain), '--variants', 'a', '--root', str(tmp_path / 'r2'))
    assert done.returncode == 1 and 'Traceback' not in done.stderr
    assert done.stderr.startswith('dcinet sweep: error: --config '), done.stderr


def test_a_live_training_left_by_a_killed_sweep_is_named_not_misread(tmp_path):
    """Issue 22: after `kill -9` of a sweep and an immediate rerun, the orphan training's
    loss lines were reported as the failure reason of the new attempt."""
    from dcinet_jax.workdir_lock import WorkdirLock
    entry = plan_lib.make_plan(str(REPO / 'configs' / 'demo.py'), [], [0], [])['runs'][0]
    workdir = tmp_path / entry['workdir']
    workdir.mkdir(parents=True)
    children = _ScriptedChildren()
    with WorkdirLock(workdir):                       # the orphan, still training
        status = run_lib.run_one(tmp_path, entry, children)
    assert children.calls == []                      # nothing started beside it
    assert status['status'] == 'interrupted' and status['exit_code'] == 75
    assert re.match(rf'a training of this run is still going \(pid {os.getpid()} on host '
                    r'\S+, since .*\), probably left by an earlier sweep; wait for it or '
                    r'stop it, then rerun the sweep$', status['last_line']), status
    status = run_lib.run_one(tmp_path, entry, children)   # the orphan ended: it runs
    assert children.calls == ['train', 'eval --step=6'] and status['status'] == 'finished'


def test_two_sweeps_on_one_root_are_refused(config_file, tmp_path):
    from dcinet_jax.workdir_lock import WorkdirBusyError, WorkdirLock
    root = tmp_path / 'root'
    root.mkdir()
    with WorkdirLock(root, lock_file='sweep.lock', user='sweep', flag='--root'):
        with pytest.raises(WorkdirBusyError, match=rf'^{root} is in use by another sweep '
                           r'\(pid \d+ .*\); wait for it to finish, stop it, or choose '
                           r'another --root$'):
            sweep_main(root=str(root), config=f'{config_file}:a', seeds='0')
    assert not (root / plan_lib.PLAN_FILE).exists()
