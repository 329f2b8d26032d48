"""The report's figures as PNG files (matplotlib, Agg backend: no display needed).

Each function draws one figure from numbers `analysis` computed and writes it to `path`;
nothing here computes a metric.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ['DPI', 'class_ap_bars', 'confusion_heatmap', 'pr_curves']

DPI = 96
_MAX_CLASS_TICKS = 40  # above this many classes, class axes show no names


def _pyplot():
    import matplotlib
    matplotlib.use('Agg', force=True)
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches='tight')
    _pyplot().close(fig)
    return path


def pr_curves(curves: Sequence[tuple[str, np.ndarray]], recall_levels: np.ndarray,
              path: Path, *, title: str) -> Path:
    """One line per task: mean interpolated precision against recall."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    # tab20's ten strong colours, then its ten light ones: 16 tasks stay distinguishable.
    ax.set_prop_cycle(color=plt.cm.tab20(np.r_[0:20:2, 1:20:2]))
    for name, precision in curves:
        ax.plot(recall_levels, precision, marker='.', markersize=4, linewidth=1.4, label=name)
    ax.set(xlabel='recall', ylabel='interpolated precision', xlim=(0, 1), ylim=(0, 1.02),
           title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2 if len(curves) > 6 else 1, loc='upper right')
    return _save(fig, path)


def class_ap_bars(class_ap: np.ndarray, names: Sequence[str], mean_ap: float, path: Path, *,
                  title: str) -> Path:
    """Per-class AP as bars in class order, with the task's mAP as a line."""
    plt = _pyplot()
    num = class_ap.size
    fig, ax = plt.subplots(figsize=(min(2.0 + 0.28 * num, 11.0), 3.0))
    values = np.nan_to_num(class_ap, nan=0.0)
    ax.bar(np.arange(num), values, color=plt.cm.viridis(values), width=0.8)
    ax.axhline(mean_ap, color='crimson', linewidth=1, label=f'mAP {mean_ap:.3f}')
    ax.set(ylim=(0, 1.02), ylabel='AP', title=title, xlim=(-0.6, num - 0.4))
    if num <= _MAX_CLASS_TICKS:
        ax.set_xticks(np.arange(num), [_short(n) for n in names], rotation=60, ha='right',
                      fontsize=7)
    else:
        ax.set_xlabel('class index')
    ax.legend(fontsize=8, loc='lower right')
    return _save(fig, path)


def confusion_heatmap(counts: np.ndarray, classes: Sequence[int], names: Sequence[str],
                      path: Path, *, title: str) -> Path:
    """counts[classes][:, classes] as a heatmap: rows query class, columns the wrong
    class retrieved in its top-k."""
    plt = _pyplot()
    sub = counts[np.ix_(classes, classes)]
    size = 2.5 + 0.3 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    image = ax.imshow(sub, cmap='Reds', interpolation='nearest')
    labels = [_short(names[c]) for c in classes]
    ax.set_xticks(np.arange(len(classes)), labels, rotation=60, ha='right', fontsize=7)
    ax.set_yticks(np.arange(len(classes)), labels, fontsize=7)
    ax.set(xlabel='retrieved instead (wrong class)', ylabel='query class', title=title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label='top-k slots')
    return _save(fig, path)


def _short(name: str, width: int = 18) -> str:
    return name if len(name) <= width else name[:width - 1] + '…'
