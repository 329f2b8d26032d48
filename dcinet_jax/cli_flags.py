"""The `dcinet` subcommands' shared flag machinery: the command registry, per-command absl
flag sets whose `--config` is an ml_collections config file with `--config.field=value`
overrides, and one-line errors for bad flags, config files and overrides.

`cli.py` (data and run commands, `main`) and `cli_tools.py` (bench, profile, sweep, report,
index, search) register their commands here.
"""

from __future__ import annotations

import sys
from typing import Callable

from absl import flags

from dcinet_jax import cli_config

COMMANDS: dict[str, tuple[str, Callable]] = {}
# The argv being parsed: ml_collections reads `--config.*` overrides from its own copy of
# argv, which must be this list (not sys.argv) when `main` is called from Python.
_parsing_argv: list[str] = []


def command(name: str, help_text: str):
    def register(fn):
        COMMANDS[name] = (help_text, fn)
        return fn
    return register


def flag_values(argv: list[str], define: Callable[[flags.FlagValues], None], prog: str):
    fv = flags.FlagValues()
    _parsing_argv[:] = [prog] + list(argv)
    define(fv)
    if any(a in ('-h', '--help') for a in argv):
        print(f'usage: {prog} [flags]\n{help_text(fv)}')
        sys.exit(0)
    spec = cli_config.config_argument(argv)
    if spec is not None and 'config' in fv and cli_config.is_file_flag(fv['config']):
        try:
            cli_config.check_file(spec)
        except ValueError as e:
            sys.exit(f'{prog}: error: {e}')
    try:
        rest = fv([prog] + list(argv))
    except flags.Error as e:
        sys.exit(f'{prog}: {e}\n\nusage: {prog} [flags]\n{help_text(fv)}')
    except (AttributeError, KeyError) as e:  # an override names a field the config lacks
        from dcinet_jax import config_fields
        sys.exit(f'{prog}: error: '
                 f'{config_fields.renamed_override(argv) or cli_config.unknown_field(argv, e)}')
    if len(rest) > 1:
        sys.exit(f'{prog}: unexpected arguments {rest[1:]}')
    return fv


def help_text(fv: flags.FlagValues) -> str:
    seen, lines = set(), []
    for f in fv._flags().values():  # noqa: SLF001 - absl has no public iterator
        if f.name not in seen:
            seen.add(f.name)
            lines.append(f'  --{f.name}: {f.help} (default: {f.default!r})')
    return '\n'.join(lines)


def config_flag(fv, required=True, default=None):
    cli_config.define(fv, _parsing_argv, required=required, default=default)


def load_config(fv):
    return cli_config.loaded(fv)


def workdir_flag(fv):
    flags.DEFINE_string('workdir', None, 'run directory (checkpoints, logs, eval results)',
                        flag_values=fv, required=True)
