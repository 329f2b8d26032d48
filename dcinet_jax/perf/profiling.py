"""`dcinet profile`: trace a few real train steps and say where the time goes.

Runs the same step as `dcinet bench` (the trainer's sharded train step on a synthetic
device batch from `harness`, so no dataset is needed), compiles it ahead of time, runs to step `a`, traces
steps `a..b-1` with `jax.profiler` and writes to `<workdir>/profile/`:

    plugins/profile/<run>/*.xplane.pb, *.trace.json.gz, perfetto_trace.json.gz
                                    the trace (TensorBoard profile plugin / ui.perfetto.dev)
    train_step.optimized.hlo.txt    `compiled.as_text()`: the HLO XLA actually runs
    analysis.json                   memory analysis, cost analysis, timings, top operations

The summary ranks HLO operations (fusions, convolutions, collectives, ...) by their
time in the trace: trace events are matched to the instruction names of the optimized
HLO, which works for CPU thunks and GPU kernels alike. If the trace holds no matching
events, it falls back to the HLO itself (largest top-level outputs) plus the compiled
cost analysis, so the command is useful on every backend.
"""

from __future__ import annotations

import collections
import gzip
import json
import re
import time
from pathlib import Path
from typing import Any

import jax

from dcinet_jax import parallel
from dcinet_jax.compilation_cache import setup_compilation_cache
from dcinet_jax.perf import harness

HLO_FILE = 'train_step.optimized.hlo.txt'
ANALYSIS_FILE = 'analysis.json'
# Control-flow instructions contain other instructions' events: counting them too
# would count the same time twice.
_CONTAINERS = {'while', 'call', 'conditional', 'async-start', 'async-done', 'async-update'}
_INSTR = re.compile(r'^\s*(?:ROOT\s+)?%([^\s=]+)\s*=\s*(.*?)\s([a-z][a-z0-9\-]*)\((.*)$')
_COMPUTATION = re.compile(r'^\s*(ENTRY\s+)?%([^\s(]+)\s*\(.*\{\s*$')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_ARRAY = re.compile(r'\b(pred|[suf]\d+|bf16|f8e\w+|c64|c128)\[([\d,]*)\]')
_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 's16': 2, 'u16': 2, 'f16': 2, 'bf16': 2, 's32': 4,
          'u32': 4, 'f32': 4, 's64': 8, 'u64': 8, 'f64': 8, 'c64': 8, 'c128': 16}


def parse_steps(spec: str) -> tuple[int, int]:
    """'a:b' -> (a, b) with 0 <= a < b: trace steps a..b-1 (0-based, after compile)."""
    try:
        a_text, b_text = str(spec).split(':')
        a, b = int(a_text), int(b_text)
    except ValueError:
        raise ValueError(f"--steps must look like 'a:b' (e.g. '3:6'), got {spec!r}") from None
    if not 0 <= a < b:
        raise ValueError(f'--steps {spec!r}: need 0 <= a < b')
    return a, b


def shape_bytes(shape: str) -> int:
    """Bytes of every array in an HLO shape string (tuples summed)."""
    total = 0
    for dtype, dims in _ARRAY.findall(shape):
        n = 1
        for d in filter(None, dims.split(',')):
            n *= int(d)
        total += n * _BYTES.get(dtype, 1)
    return total


def hlo_instructions(hlo_text: str) -> dict[str, dict[str, Any]]:
    """name -> {opcode, computation, entry, out_bytes, op_name} for every instruction."""
    out: dict[str, dict[str, Any]] = {}
    computation, entry = '', False
    for line in hlo_text.splitlines():
        c = _COMPUTATION.match(line)
        if c and '=' not in line.split('(')[0]:
            computation, entry = c.group(2), bool(c.group(1))
            continue
        m = _INSTR.match(line)
        if not m:
            continue
        name, shape, opcode, rest = m.groups()
        op = _OP_NAME.search(rest)
        out[name] = {'opcode': opcode, 'computation': computation, 'entry': entry,
                     'out_bytes': shape_bytes(shape), 'op_name': op.group(1) if op else ''}
    return out


def short_op_name(op_name: str, parts: int = 3) -> str:
    """The last `parts` components of a JAX op_name path (enough to find the layer)."""
    return '/'.join(op_name.split('/')[-parts:]) if op_name else ''


def find_trace_file(trace_dir: Path) -> Path | None:
    """Newest Chrome-trace JSON written under `trace_dir` (TensorBoard's or Perfetto's)."""
    files = sorted(trace_dir.rglob('*.trace.json.gz')) or sorted(
        trace_dir.rglob('perfetto_trace.json.gz'))
    return max(files, key=lambda p: p.stat().st_mtime) if files else None


def load_trace_events(path: Path) -> list[dict]:
    with gzip.open(path, 'rt') as f:
        data = json.load(f)
    return data.get('traceEvents', []) if isinstance(data, dict) else list(data)


def _event_op(name: str) -> str:
    """'%fusion.3 = ...' or 'fusion.3' -> 'fusion.3'."""
    return name.lstrip('%').split(' ')[0].split('=')[0]


def summarize_trace(events: list[dict], instructions: dict[str, dict[str, Any]], *,
                    num_steps: int, top: int = 15) -> dict[str, Any] | None:
    """Time per HLO operation (summed over devices, per step) from trace events.

    Returns None when no event matches an instruction of the optimized HLO.
    """
    per_op: collections.Counter = collections.Counter()
    calls: collections.Counter = collections.Counter()
    for e in events:
        if e.get('ph') != 'X' or 'dur' not in e:
            continue
        op = _event_op(str(e.get('name', '')))
        info = instructions.get(op)
        if info is None or info['opcode'] in _CONTAINERS:
            continue
        per_op[op] += float(e['dur'])
        calls[op] += 1
    if not per_op:
        return None
    total = sum(per_op.values())
    by_opcode: collections.Counter = collections.Counter()
    for op, us in per_op.items():
        by_opcode[instructions[op]['opcode']] += us
    steps = max(num_steps, 1)
    return {
        'source': 'trace',
        'total_op_ms_per_step': total / 1e3 / steps,
        'top_ops': [{'name': op, 'opcode': instructions[op]['opcode'],
                     'ms_per_step': us / 1e3 / steps, 'share': us / total,
                     'calls_per_step': calls[op] / steps,
                     'op_name': short_op_name(instructions[op]['op_name'])}
                    for op, us in per_op.most_common(top)],
        'by_opcode': [{'opcode': k, 'ms_per_step': us / 1e3 / steps, 'share': us / total}
                      for k, us in by_opcode.most_common()],
    }


def summarize_hlo(instructions: dict[str, dict[str, Any]], cost: dict[str, float], *,
                  top: int = 15) -> dict[str, Any]:
    """Fallback without a usable trace: the top-level operations with the largest
    outputs (memory traffic is what most fusions are bound by) and the whole-step cost."""
    entry = [(n, i) for n, i in instructions.items()
             if i['entry'] and i['opcode'] not in _CONTAINERS | {'parameter', 'tuple',
                                                                  'get-tuple-element',
                                                                  'constant', 'bitcast'}]
    entry.sort(key=lambda kv: kv[1]['out_bytes'], reverse=True)
    counts = collections.Counter(i['opcode'] for _, i in entry)
    return {
        'source': 'hlo',
        'cost_analysis': cost,
        'top_ops': [{'name': n, 'opcode': i['opcode'], 'out_bytes': i['out_bytes'],
                     'op_name': short_op_name(i['op_name'])} for n, i in entry[:top]],
        'by_opcode': [{'opcode': k, 'count': v} for k, v in counts.most_common()],
    }


def format_summary(summary: dict[str, Any]) -> str:
    lines = []
    if summary['source'] == 'trace':
        lines.append(f"time per step in HLO operations (all devices): "
                     f"{summary['total_op_ms_per_step']:.3f} ms")
        lines.append(f"{'ms/step':>9} {'share':>6}  {'opcode':<18} {'operation':<32} source")
        for r in summary['top_ops']:
            lines.append(f"{r['ms_per_step']:9.3f} {100 * r['share']:5.1f}%  "
                         f"{r['opcode']:<18} {r['name']:<32} {r['op_name']}")
        lines.append('by opcode: ' + ', '.join(
            f"{r['opcode']} {100 * r['share']:.1f}%" for r in summary['by_opcode'][:8]))
    else:
        c = summary['cost_analysis']
        lines.append('no HLO operation found in the trace; from the optimized HLO instead '
                     f"(per device: {c.get('flops', 0) / 1e9:.3f} GFLOP, "
                     f"{c.get('bytes_accessed', 0) / 2**20:.1f} MiB accessed per step)")
        lines.append(f"{'out bytes':>12}  {'opcode':<18} {'operation':<32} source")
        for r in summary['top_ops']:
            lines.append(f"{r['out_bytes']:12d}  {r['opcode']:<18} {r['name']:<32} "
                         f"{r['op_name']}")
    return '\n'.join(lines)


def profile_main(config: Any, workdir: str | Path, *, steps: str = '3:6',
                 print_summary: bool = True) -> dict[str, Any]:
    """Compiles the train step, traces steps a..b-1, writes HLO, analysis and trace."""
    a, b = parse_steps(steps)
    config = harness.prepare_config(config)
    out_dir = Path(workdir).absolute() / 'profile'
    out_dir.mkdir(parents=True, exist_ok=True)
    setup_compilation_cache(config)
    mesh = parallel.make_mesh()
    setup = harness.build_train_setup(config, total_steps=b + 1, mesh=mesh)
    compiled, ctimes = harness.compile_step(setup)
    hlo_text = compiled.as_text()
    (out_dir / HLO_FILE).write_text(hlo_text)
    cost = harness.cost_figures(compiled)
    n_dev = mesh.devices.size

    keys = harness.step_keys(config.seed + harness.KEYS_SEED_OFFSET, b, mesh)
    batch = setup.batch
    state, _ = harness.run_steps(compiled, (setup.take_state(), None), batch, keys[:a])
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    jax.profiler.start_trace(str(out_dir), create_perfetto_trace=True)
    try:
        for i in range(a, b):
            with jax.profiler.StepTraceAnnotation('train', step_num=i):
                state, _ = compiled(state, batch, keys[i])
        jax.block_until_ready(state)
        traced_s = time.perf_counter() - t0
    finally:
        jax.profiler.stop_trace()

    instructions = hlo_instructions(hlo_text)
    trace_file = find_trace_file(out_dir)
    summary = None
    if trace_file is not None:
        summary = summarize_trace(load_trace_events(trace_file), instructions,
                                  num_steps=b - a)
    if summary is None:
        summary = summarize_hlo(instructions, cost)
    devices = jax.devices()
    analysis = {
        'date': time.strftime('%Y-%m-%d %H:%M:%S'), **harness.device_figures(),
        'dtype': str(config.model.dtype),
        'batch_per_modality': int(config.data.batch_per_modality),
        'steps_traced': [a, b], 'traced_seconds': traced_s,
        'step_time_s_in_trace': traced_s / (b - a),
        **ctimes,
        'cost_analysis_per_device': cost,
        'flops_per_step_all_devices': cost['flops'] * n_dev,
        'memory_analysis_per_device': harness.compiled_memory(compiled),
        'peak_memory_bytes': harness.device_peak_memory(devices),
        'hlo_file': HLO_FILE,
        'trace_file': str(trace_file.relative_to(out_dir)) if trace_file else None,
        'hlo_instruction_count': len(instructions),
        'summary': summary,
    }
    (out_dir / ANALYSIS_FILE).write_text(json.dumps(analysis, indent=2, default=str))
    if print_summary:
        mem = analysis['memory_analysis_per_device']
        print(f"{analysis['device_kind']} x {n_dev}, {analysis['dtype']}, batch "
              f"{analysis['batch_per_modality']}/modality: compile {ctimes['compile_s']:.2f} s, "
              f"{analysis['step_time_s_in_trace'] * 1e3:.2f} ms/step while tracing, "
              f"{cost['flops'] * n_dev / 1e9:.3f} GFLOP/step, "
              f"{mem.get('total_bytes', 0) / 2**20:.1f} MiB/device (compiled)")
        print(format_summary(summary))
        print(f'trace, optimized HLO and analysis written to {out_dir}')
    return analysis
