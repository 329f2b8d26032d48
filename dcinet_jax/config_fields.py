"""Config fields that were renamed, and the one-line errors that point to the new name.

A field that moves would otherwise fail far from the cause: an old `--config.X=...`
override reads as "no such config field", and an old config file that still sets the
field would be silently ignored (the method reads the new one). Both are caught here:
`renamed_override` for command-line overrides (cli, sweep planning), `check_renamed`
for a loaded config (called when the method is looked up, before anything runs).
"""

from __future__ import annotations

from typing import Any, Iterable

# old dotted path -> new dotted path (relative to the config root)
RENAMED = {
    # One data folder for every method: DSFFN and HSLM used to read config.data.data_dir.
    'data.data_dir': 'data_dir',
}


def _message(old: str, new: str) -> str:
    return f'config.{old} was renamed: use --config.{new} (config.{new} in a config file)'


def renamed_override(argv: Iterable[str]) -> str | None:
    """The error for the first `--config.<old>=...` argument of `argv` naming a renamed
    field, else None."""
    for arg in argv:
        name = str(arg).split('=', 1)[0]
        if name.startswith('--config.') and name[len('--config.'):] in RENAMED:
            old = name[len('--config.'):]
            return _message(old, RENAMED[old])
    return None


def _has(config: Any, dotted: str) -> bool:
    node = config
    for part in dotted.split('.'):
        try:
            if part not in node:
                return False
        except TypeError:          # a leaf, not a section
            return False
        node = node[part]
    return True


def check_renamed(config: Any) -> None:
    """ValueError naming the new field when `config` still carries a renamed one."""
    for old, new in RENAMED.items():
        if _has(config, old):
            raise ValueError(_message(old, new))
