"""The repository's layout as the README's tree shows it: every folder in the tree exists,
every package is in the tree and says what it holds, and no module grows past ~400 lines."""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CODE_ROOTS = ('dcinet_jax', 'input_pipeline', 'configs')
MAX_LINES = 420   # "no file over ~400 lines": a module past this wants splitting


def _readme_tree() -> list[str]:
    """Folder paths of the README's tour tree, from the indentation of its lines."""
    text = (REPO / 'README.md').read_text()
    block = text.split('## Tour', 1)[1].split('```', 2)[1]
    folders, stack = [], []
    for line in block.splitlines():
        m = re.match(r'^( *)([\w.-]+)/\s', line + ' ')
        if not m:
            continue
        depth = len(m.group(1)) // 2
        stack[depth:] = [m.group(2)]
        folders.append('/'.join(stack))
    return folders


def test_readme_tree_folders_exist():
    folders = _readme_tree()
    assert len(folders) > 15, folders
    missing = [f for f in folders if not (REPO / f).is_dir()]
    assert not missing, f'README tree names folders that do not exist: {missing}'


def test_every_package_is_in_the_readme_tree_and_documented():
    listed = set(_readme_tree())
    for root in ('dcinet_jax', 'input_pipeline'):
        for init in (REPO / root).rglob('__init__.py'):
            pkg = init.parent.relative_to(REPO).as_posix()
            assert pkg in listed, f'{pkg}/ is missing from the README tree'
            doc = ast.get_docstring(ast.parse(init.read_text()))
            assert doc and len(doc) > 40, f'{pkg}/__init__.py needs a docstring saying what it holds'


def test_no_module_is_too_long():
    long = []
    for root in CODE_ROOTS:
        for path in (REPO / root).rglob('*.py'):
            n = len(path.read_text().splitlines())
            if n > MAX_LINES:
                long.append(f'{path.relative_to(REPO)} ({n} lines)')
    assert not long, f'split these modules: {long}'
