"""Built-in demo data sets, each written in a real format's exact on-disk layout (`dcinet demo-data`).

One module per generator (FG-XMedia easy and hard, VEGAS/AVE, precomp) plus `layout`, the
FG-XMedia folder writer both FG-XMedia generators share; docs/data.md#demo-data.
"""

from __future__ import annotations

import os


def check_target(out: str | os.PathLike, force: bool) -> None:
    """Refuses to write demo data into a folder that already holds files.

    The generators write file by file under fixed names (`vegas_feature_norm.h5`,
    `train_ims.npy`, `list/...`), the names of the real releases: pointed at a real data
    folder they would silently replace it. `force` (`dcinet demo-data --force`) allows it.
    """
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f'--out {os.fspath(out)}: exists and is not a folder')
    if force or not os.path.isdir(out):
        return
    with os.scandir(out) as entries:
        first = next(iter(entries), None)
    if first is not None:
        raise ValueError(
            f'--out {os.fspath(out)}: folder is not empty (holds {first.name}); demo data '
            'would overwrite files there: choose an empty or new folder, or pass --force')
