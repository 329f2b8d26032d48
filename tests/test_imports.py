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


def _import_graph(roots: tuple[str, ...], base: Path = REPO) -> dict[str, set[str]]:
    """module -> the project modules it imports, over the packages `roots` under `base`."""
    files = {}
    for root in roots:
        for path in (base / root).rglob('*.py'):
            parts = path.relative_to(base).with_suffix('').parts
            name = '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)
            files[name] = path
    # A module's own parent packages are imported before it anyway (and `from pkg import
    # sibling` names the parent), so edges up to an ancestor are not loops.
    return {name: {m for m in _project_imports(path, roots)
                   if m in files and m != name and not name.startswith(m + '.')}
            for name, path in files.items()}


def _first_loop(graph: dict[str, set[str]]) -> str | None:
    """'a -> b -> a' for the first cycle found (depth first, sorted), else None."""
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return ' -> '.join(trail + [node, nxt])
            if nxt not in state:
                loop = visit(nxt, trail + [node])
                if loop:
                    return loop
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state:
            loop = visit(name, [])
            if loop:
                return loop
    return None


def test_no_import_loop():
    """The import graph of dcinet_jax, input_pipeline and configs has no cycle (a config
    file's lazy import of another config counts too)."""
    graph = _import_graph(('dcinet_jax', 'input_pipeline', 'configs'))
    loop = _first_loop(graph)
    assert loop is None, f'import loop: {loop}'
    assert len(graph) > 30  # the walk saw the whole tree
    assert sum(name.startswith('configs.') for name in graph) > 15   # and the configs


def test_the_loop_finder_sees_a_loop_through_a_lazy_import(tmp_path):
    """The check itself: two config modules that import each other (one inside a
    function, as configs/demo_hard.py once did) are reported."""
    pkg = tmp_path / 'configs'
    pkg.mkdir()
    (pkg / '__init__.py').write_text('')
    (pkg / 'a.py').write_text('from configs import b\n')
    (pkg / 'b.py').write_text('def get_config():\n    from configs import a\n')
    (pkg / 'c.py').write_text('from configs import a\n')
    assert _first_loop(_import_graph(('configs',), tmp_path)) == \
        'configs.a -> configs.b -> configs.a'
    (pkg / 'b.py').write_text('def get_config():\n    return None\n')
    assert _first_loop(_import_graph(('configs',), tmp_path)) is None
