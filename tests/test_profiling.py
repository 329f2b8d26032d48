"""`dcinet profile`: trace, optimized HLO and analysis files, and the time summary."""

import gzip
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dcinet_jax import cli
from dcinet_jax.perf import profiling

TEST_CONFIG = str(Path(__file__).resolve().parents[1] / 'configs' / 'test.py')


def test_parse_steps():
    assert profiling.parse_steps('3:6') == (3, 6)
    assert profiling.parse_steps('0:1') == (0, 1)
    for bad in ('6:3', '3:3', '-1:2', '3', 'a:b', '1:2:3'):
        with pytest.raises(ValueError, match='steps'):
            profiling.parse_steps(bad)


def test_shape_bytes_matches_numpy():
    cases = {
        'f32[2,3]{1,0}': np.zeros((2, 3), np.float32).nbytes,
        'bf16[4,5,6]{2,1,0}': 4 * 5 * 6 * 2,
        'u8[2,64,64,3]{3,2,1,0}': np.zeros((2, 64, 64, 3), np.uint8).nbytes,
        's32[]': np.zeros((), np.int32).nbytes,
        '(f32[7,7,3,4]{3,2,1,0}, s32[2]{0}, /*index=2*/pred[3])':
            np.zeros((7, 7, 3, 4), np.float32).nbytes + 8 + 3,
    }
    for shape, expected in cases.items():
        assert profiling.shape_bytes(shape) == expected, shape


def _small_compiled():
    def f(x, w):
        return jnp.tanh(x @ w).sum(0) + jnp.cos(w).mean()
    x = jnp.ones((64, 32), jnp.float32)
    w = jnp.ones((32, 16), jnp.float32)
    return jax.jit(f).lower(x, w).compile()


def test_hlo_instructions_reads_compiled_text():
    text = _small_compiled().as_text()
    instrs = profiling.hlo_instructions(text)
    # Every "%name = ..." definition line of the text is found, with its opcode.
    defined = [line.split('=')[0].strip().removeprefix('ROOT ').strip().lstrip('%')
               for line in text.splitlines()
               if line.strip().startswith(('%', 'ROOT %')) and ' = ' in line]
    assert set(defined) == set(instrs)
    opcodes = {i['opcode'] for i in instrs.values()}
    assert 'parameter' in opcodes
    assert any(i['entry'] for i in instrs.values())
    params = [i for i in instrs.values() if i['opcode'] == 'parameter' and i['entry']]
    assert sorted(p['out_bytes'] for p in params) == [32 * 16 * 4, 64 * 32 * 4]


def test_summarize_trace_against_hand_totals():
    instructions = {
        'fusion.1': {'opcode': 'fusion', 'op_name': 'a/b/c/d'},
        'convolution.2': {'opcode': 'convolution', 'op_name': 'x/conv'},
        'while.3': {'opcode': 'while', 'op_name': ''},
    }
    events = [
        {'ph': 'X', 'name': 'fusion.1', 'dur': 100.0},
        {'ph': 'X', 'name': 'fusion.1', 'dur': 300.0},
        {'ph': 'X', 'name': '%convolution.2 = f32[2] convolution(...)', 'dur': 600.0},
        {'ph': 'X', 'name': 'while.3', 'dur': 5000.0},        # container: not counted
        {'ph': 'X', 'name': 'PjitFunction(step)', 'dur': 9000.0},  # not an HLO op
        {'ph': 'i', 'name': 'fusion.1'},                      # instant: no duration
    ]
    s = profiling.summarize_trace(events, instructions, num_steps=2)
    assert s['source'] == 'trace'
    assert s['total_op_ms_per_step'] == pytest.approx((100 + 300 + 600) / 1e3 / 2)
    top = {r['name']: r for r in s['top_ops']}
    assert set(top) == {'fusion.1', 'convolution.2'}
    assert top['convolution.2']['share'] == pytest.approx(0.6)
    assert top['fusion.1']['ms_per_step'] == pytest.approx(0.2)
    assert top['fusion.1']['calls_per_step'] == pytest.approx(1.0)
    assert top['fusion.1']['op_name'] == 'b/c/d'
    assert profiling.summarize_trace(events[4:], instructions, num_steps=1) is None


def test_summarize_hlo_fallback_orders_by_output_size():
    text = _small_compiled().as_text()
    s = profiling.summarize_hlo(profiling.hlo_instructions(text), {'flops': 1.0})
    sizes = [r['out_bytes'] for r in s['top_ops']]
    assert sizes == sorted(sizes, reverse=True) and s['source'] == 'hlo'
    assert 'no HLO operation found' in profiling.format_summary(s)


@pytest.mark.slow
def test_cli_profile_writes_trace_hlo_and_analysis(tmp_path, capsys):
    cli.main(['profile', '--config', TEST_CONFIG, '--workdir', str(tmp_path),
              '--steps', '1:3'])
    printed = capsys.readouterr().out
    out = tmp_path / 'profile'
    traces = list(out.rglob('*.xplane.pb'))
    assert traces and all(p.stat().st_size > 0 for p in traces)
    hlo = (out / profiling.HLO_FILE).read_text()
    assert 'ENTRY' in hlo and 'convolution' in hlo
    analysis = json.loads((out / profiling.ANALYSIS_FILE).read_text())
    assert analysis['steps_traced'] == [1, 3]
    assert analysis['cost_analysis_per_device']['flops'] > 0
    assert analysis['memory_analysis_per_device']['total_bytes'] > 0
    assert analysis['compile_s'] > 0 and analysis['step_time_s_in_trace'] > 0
    # The trace file named in the analysis is a readable Chrome trace with events.
    trace = out / analysis['trace_file']
    with gzip.open(trace, 'rt') as f:
        assert json.load(f)['traceEvents']
    summary = analysis['summary']
    assert summary['source'] == 'trace' and summary['top_ops']
    assert summary['top_ops'][0]['ms_per_step'] > 0
    ops = profiling.hlo_instructions(hlo)
    assert all(r['name'] in ops for r in summary['top_ops'])
    assert 'ms/step' in printed and 'written to' in printed
