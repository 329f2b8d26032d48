"""The `--config FILE[:ARG]` flag of the `dcinet` subcommands, and its one-line errors.

ml_collections loads the file and applies `--config.a.b=value` overrides; left alone, a
missing file, a syntax error or a file without `get_config` end in 30-50-line tracebacks
(or in a misleading "no such config field"), and so does a config that lacks a field the
chosen method reads (`--config.method=dsffn` on a DCINet config). This module checks the
file before ml_collections runs it and turns those failures into one line each that
names the file, the line or the field.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from typing import Any

from absl import flags

# The config of the running command, for naming a missing field's full path.
_loaded: list[Any] = []


def define(fv: flags.FlagValues, argv: list[str], required: bool = True,
           default: str | None = None) -> None:
    """`--config` on `fv` (ml_collections reads its overrides from `argv`)."""
    from ml_collections import config_flags
    config_flags.DEFINE_config_file(
        'config', default, 'ml_collections config file (get_config()), e.g. configs/demo.py',
        flag_values=fv, lock_config=True, sys_argv=list(argv))
    if required:
        flags.mark_flag_as_required('config', flag_values=fv)


def is_file_flag(flag: Any) -> bool:
    """Whether `flag` is a config-file flag (sweep's `--config` is a plain string)."""
    from ml_collections.config_flags import config_flags
    return config_flags.is_config_flag(flag)


def config_argument(argv: list[str]) -> str | None:
    """The value of `--config` in `argv` (`--config X` or `--config=X`), or None."""
    for i, arg in enumerate(argv):
        if arg in ('--config', '-config') and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(('--config=', '-config=')):
            return arg.split('=', 1)[1]
    return None


def config_args(argv: list[str]) -> list[str]:
    """`--config FILE` and every `--config.field=value` of `argv`: the config exactly as
    the user chose it, for commands a message suggests (e.g. rebuilding a search index)."""
    spec = config_argument(argv)
    overrides = [a for a in argv if a.startswith('--config.')]
    return (['--config', spec] if spec is not None else []) + overrides


def check_file(spec: str) -> None:
    """Raises ValueError, one line, when `spec` (FILE or FILE:ARG) is not a loadable
    config file: missing, not valid Python, or without a top-level `get_config`.
    Parsed, never executed here."""
    path = Path(spec.split(':', 1)[0])
    if not path.is_file():
        raise ValueError(f'--config {path}: no such config file')
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as e:
        raise ValueError(f'--config {path}:{e.lineno}: syntax error: {e.msg}') from None
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f'--config {path}: not a Python file ({e})') from None
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    names |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
              if isinstance(t, ast.Name)}
    names |= {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom)
              for a in n.names}
    if 'get_config' not in names:
        raise ValueError(f'--config {path}: defines no get_config() (a config file is a '
                         'Python file whose get_config() returns the ConfigDict)')
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef)
               and n.name == 'get_config'), None)
    if ':' in spec and fn is not None and not (fn.args.args or fn.args.vararg
                                               or fn.args.posonlyargs):
        raise ValueError(f'--config {spec}: {path}\'s get_config() takes no argument; '
                         f'drop ":{spec.split(":", 1)[1]}"')


def loaded(fv: flags.FlagValues) -> Any:
    """The parsed config (kept to name a missing field's path, see missing_field)."""
    config = fv.config
    if config is None:
        sys.exit('--config FILE is required')
    _loaded[:] = [config]
    return config


def unknown_field(argv: list[str], error: Exception) -> str:
    """'--config.optim.learning_rat: no such config field (did you mean learning_rate?)'."""
    text = str(error).replace('\\n', '\n')
    name = re.search(r"'\\?'?([\w.]+)\\?'?'", text)
    hint = re.search(r'Did you mean "([\w.]+)"', text)
    flag = next((a.split('=')[0] for a in argv if name and a.startswith('--config.')
                 and f'.{name.group(1)}.' in a.split('=')[0] + '.'), '--config.<field>')
    return (f'{flag}: no such config field'
            + (f' (did you mean {hint.group(1)}?)' if hint else ''))


def missing_field(error: BaseException) -> str | None:
    """One line for a field read from the config that the config lacks, or None when
    `error` is anything else.

    Only an AttributeError/KeyError raised inside ml_collections' ConfigDict itself
    counts (so a bug elsewhere is never disguised as a config problem); the field's
    path comes from the ConfigDict that raised it, found in the loaded config.
    """
    if not isinstance(error, (AttributeError, KeyError)) or error.__traceback__ is None:
        return None
    tb = error.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    frame = tb.tb_frame
    if 'ml_collections' not in frame.f_code.co_filename:
        return None
    node = frame.f_locals.get('self')
    key = frame.f_locals.get('attribute', frame.f_locals.get('key'))
    if node is None or not isinstance(key, str):
        return None
    root = _loaded[0] if _loaded else None
    prefix = None
    if root is not None:   # the node itself, else a copy of it (methods resolve copies)
        prefix = _path_of(root, lambda n: n is node, '')
        if prefix is None:
            prefix = _path_of(root, lambda n: sorted(n.keys()) == sorted(node.keys()), '')
    field = f'{prefix}.{key}' if prefix else key
    method = str(root.get('method', 'dcinet')) if root is not None else None
    line = f'the config has no field {field}'
    if method:
        line += f", which config.method={method!r} reads"
        examples = sorted(p.name for p in Path(__file__).parent.parent.glob(
            f'configs/{method}_*.py'))
        demo = f'{method}_demo.py'
        if examples:
            line += ('; is it a config for another method? start from configs/'
                     f'{demo if demo in examples else examples[0]} or another {method} config')
    return line


def _path_of(node: Any, match, prefix: str) -> str | None:
    """The dotted path of the first ConfigDict inside `node` (itself: '') that `match`es."""
    if match(node):
        return prefix
    for name, child in node.items():
        if hasattr(child, 'items'):
            found = _path_of(child, match, f'{prefix}.{name}' if prefix else name)
            if found is not None:
                return found
    return None
