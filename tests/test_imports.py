"""Layering: the accelerator side never imports TensorFlow, and no module imports in a loop."""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# What runs on accelerator hosts (which have no TensorFlow), and the TF-free parts of
# the input pipeline that both sides or the prepare workers import.
ACCELERATOR_SIDE = ('dcinet_jax.models', 'dcinet_jax.train_step', 'dcinet_jax.state',
                    'dcinet_jax.methods', 'dcinet_jax.methods.dcinet', 'dcinet_jax.train',
                    'dcinet_jax.evaluate', 'dcinet_jax.evaluators.fgxmedia',
                    'dcinet_jax.checkpoints', 'dcinet_jax.perf.bench',
                    'dcinet_jax.perf.profiling', 'input_pipeline.spec',
                    'input_pipeline.samplers', 'input_pipeline.fgxmedia.encode')


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          env={'JAX_PLATFORMS': 'cpu', 'PATH': ''})


def test_accelerator_side_imports_leave_tensorflow_out():
    code = ('import importlib, sys\n'
            f'for name in {ACCELERATOR_SIDE!r}:\n'
            '    importlib.import_module(name)\n'
            "    assert 'tensorflow' not in sys.modules, name\n"
            "    assert 'tensorflow_datasets' not in sys.modules, name\n"
            "print('clean')")
    out = _run(code)
    assert out.returncode == 0 and 'clean' in out.stdout, out.stderr[-2000:]


def test_spec_is_standard_library_only():
    out = _run("import sys, input_pipeline.spec; assert 'PIL' not in sys.modules; "
               "assert 'numpy' not in sys.modules; print('clean')")
    assert out.returncode == 0 and 'clean' in out.stdout, out.stderr[-2000:]


def _project_imports(path: Path, package_roots: tuple[str, ...]) -> set[str]:
    """Project modules imported anywhere in the file (lazy imports count: a loop through
    a function-level import is still two modules that need each other)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f'{node.module}.{a.name}' for a in node.names}
    return {n for n in found if n.split('.')[0] in package_roots}


def test_no_import_loop():
    """The import graph of dcinet_jax and input_pipeline has no cycle."""
    roots = ('dcinet_jax', 'input_pipeline')
    files = {}
    for root in roots:
        for path in (REPO / root).rglob('*.py'):
            parts = path.relative_to(REPO).with_suffix('').parts
            name = '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)
            files[name] = path
    # A module's own parent packages are imported before it anyway (and `from pkg import
    # sibling` names the parent), so edges up to an ancestor are not loops.
    graph = {name: {m for m in _project_imports(path, roots)
                    if m in files and m != name and not name.startswith(m + '.')}
             for name, path in files.items()}
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError('import loop: ' + ' -> '.join(trail + [node, nxt]))
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert len(graph) > 30  # the walk saw the whole tree
