"""The report as one self-contained HTML page.

No external asset, script or font: the style sheet is inline, figures and thumbnails are
relative paths into the report folder, so the folder opens offline and can be moved as
a whole. Every piece of text that comes from data (class names, item ids, texts, config
values) is HTML-escaped.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from dcinet_jax.html_report.analysis import TaskAnalysis
from dcinet_jax.html_report.thumbnails import Thumbnail

__all__ = ['GENERATOR', 'PageContent', 'markdown_tables_to_html', 'render_page', 'top_confusions']

TOP_CONFUSIONS = 8  # confusion pairs listed per task
GENERATOR = 'dcinet report'  # <meta name=generator>: marks a folder as holding a report

_STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; margin: 0 auto;
  max-width: 1200px; padding: 16px 24px; color: #1d2330; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #d8dde8;
  padding-bottom: 4px; margin-top: 1.8em; } h3 { margin-bottom: 0.4em; }
.facts { color: #4a5468; font-size: 0.92em; } .facts b { color: #1d2330; }
nav { font-size: 0.9em; margin: 0.8em 0; } nav a { margin-right: 0.8em; }
table { border-collapse: collapse; margin: 0.4em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #d8dde8; padding: 3px 8px; } th { background: #eef1f7; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.figs { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.figs img { max-width: 100%; border: 1px solid #e3e6ee; }
.note { color: #4a5468; font-size: 0.88em; max-width: 900px; }
.query { display: flex; gap: 10px; align-items: flex-start; margin: 10px 0 18px;
  padding: 8px; background: #f6f7fb; border-radius: 6px; overflow-x: auto; }
.item { flex: 0 0 auto; width: 132px; font-size: 0.75em; text-align: center;
  overflow-wrap: anywhere; }
.item img { max-width: 128px; max-height: 112px; display: block; margin: 0 auto 3px; }
.item .text { height: 108px; overflow: hidden; text-align: left; background: #fff;
  overflow-wrap: anywhere;
  padding: 2px 4px; margin-bottom: 3px; font-size: 0.95em; border: 1px solid #e3e6ee; }
.item.q { width: 150px; border: 3px solid #3867d6; border-radius: 4px; padding: 3px;
  background: #fff; }
.item.hit { border: 3px solid #20a35a; border-radius: 4px; padding: 3px; }
.item.miss { border: 3px solid #d63838; border-radius: 4px; padding: 3px; }
.mark.hit { color: #168048; font-weight: 600; } .mark.miss { color: #b42323; font-weight: 600; }
.id { color: #6b7487; word-break: break-all; }
"""


@dataclass
class PageContent:
    """Everything the page shows; figures and thumbnails are paths relative to the page.

    figures: 'pr_bimodal', 'pr_multimodal', 'confusion' and 'class_ap/<task>' -> path.
    items: (modality, index) -> (item id, Thumbnail) for every shown item.
    results_maps: task key -> mAP in the results file (None where it has none).
    """
    title: str
    facts: Sequence[tuple[str, str]]
    results_markdown: str
    results_source: str
    analyses: Sequence[TaskAnalysis]
    class_names: Sequence[str]
    figures: Mapping[str, str]
    items: Mapping[tuple[str, int], tuple[str, Thumbnail]]
    results_maps: Mapping[str, float | None] = field(default_factory=dict)
    confusion_classes: Sequence[int] = ()


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def markdown_tables_to_html(markdown: str) -> str:
    """The evaluators' markdown tables ('**Title**', '| a | b |' rows, a '|---|' rule
    under the header, other lines as paragraphs) as HTML, every cell escaped."""
    out, rows = [], []

    def flush():
        if rows:
            head, body = rows[0], rows[1:]
            out.append('<table><tr>' + ''.join(f'<th>{_e(c)}</th>' for c in head) + '</tr>')
            for row in body:
                cells = ''.join(
                    f'<td class="num">{_e(c)}</td>' if i and _numeric(c) else f'<td>{_e(c)}</td>'
                    for i, c in enumerate(row))
                out.append(f'<tr>{cells}</tr>')
            out.append('</table>')
            rows.clear()

    for line in markdown.splitlines():
        line = line.strip()
        if line.startswith('|'):
            cells = [c.strip() for c in line.strip('|').split('|')]
            if not all(set(c) <= set('-:') and c for c in cells):
                rows.append(cells)
            continue
        flush()
        if line.startswith('**') and line.endswith('**') and len(line) > 4:
            out.append(f'<h3>{_e(line[2:-2])}</h3>')
        elif line:
            out.append(f'<p>{_e(line)}</p>')
    flush()
    return '\n'.join(out)


def _numeric(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return cell == '—'


def top_confusions(analysis: TaskAnalysis, limit: int = TOP_CONFUSIONS
                   ) -> list[tuple[int, int, int, float]]:
    """(query class, wrong class, top-k slots, share of that class's top-k slots), most
    frequent first (ties: lower classes first)."""
    counts = analysis.confusion
    slots = np.bincount(analysis.query_labels, minlength=counts.shape[0]) * analysis.top_k
    rows, cols = np.nonzero(counts)
    order = np.lexsort((cols, rows, -counts[rows, cols]))[:limit]
    return [(int(rows[i]), int(cols[i]), int(counts[rows[i], cols[i]]),
             float(counts[rows[i], cols[i]] / max(slots[rows[i]], 1))) for i in order]


def _img(path: str, alt: str) -> str:
    return f'<img src="{_e(path)}" alt="{_e(alt)}">'


def _summary_table(c: PageContent) -> str:
    k = c.analyses[0].top_k if c.analyses else 0
    out = ['<table><tr><th>task</th><th>queries</th><th>gallery</th>'
           f'<th>mAP (this page)</th><th>mAP (results file)</th><th>P@{k}</th></tr>']
    for a in c.analyses:
        ref = c.results_maps.get(a.spec.key)
        ref_text = '—' if ref is None else f'{ref:.4f}'
        out.append(f'<tr><td><a href="#task-{_e(a.spec.key)}">{_e(a.spec.key)}</a></td>'
                   f'<td class="num">{a.ap.size}</td><td class="num">{a.gallery_labels.size}</td>'
                   f'<td class="num">{a.mean_ap:.4f}</td><td class="num">{ref_text}</td>'
                   f'<td class="num">{a.precision_at_k:.3f}</td></tr>')
    out.append('</table>')
    return '\n'.join(out)


def _item_html(c: PageContent, modality: str, index: int, css: str, caption: str) -> str:
    item_id, thumb = c.items[(modality, index)]
    if thumb.image is not None:
        body = _img(thumb.image, f'{modality} {item_id}')
    else:
        body = f'<div class="text">{_e(thumb.text)}</div>'
    return (f'<div class="item {css}">{body}<div>{caption}</div>'
            f'<div class="id">{_e(item_id)}</div></div>')


def _examples_html(c: PageContent, a: TaskAnalysis) -> str:
    out = []
    for ex in a.examples:
        name = c.class_names[ex.label]
        caption = (f'<b>{_e(ex.role)}</b> query<br>{_e(a.spec.query)} · {_e(name)}<br>'
                   f'AP {ex.ap:.3f}')
        parts = [_item_html(c, a.spec.query, ex.query, 'q', caption)]
        for rank, (g, score, hit) in enumerate(zip(ex.retrieved, ex.scores, ex.relevant), 1):
            modality, local = a.gallery_item(int(g))
            css, mark = ('hit', '✓ relevant') if hit else ('miss', '✗ not relevant')
            caption = (f'#{rank} <span class="mark {css}">{mark}</span><br>'
                       f'{_e(modality)} · {_e(c.class_names[a.gallery_labels[g]])}<br>'
                       f'cos {score:.3f}')
            parts.append(_item_html(c, modality, local, css, caption))
        out.append('<div class="query">' + ''.join(parts) + '</div>')
    return '\n'.join(out)


def _confusion_table(c: PageContent, a: TaskAnalysis) -> str:
    pairs = top_confusions(a)
    if not pairs:
        return f'<p class="note">No wrong class in any top-{a.top_k}.</p>'
    out = ['<table><tr><th>query class</th><th>retrieved instead</th>'
           f'<th>top-{a.top_k} slots</th><th>share of its slots</th></tr>']
    for query_class, wrong, count, share in pairs:
        out.append(f'<tr><td>{_e(c.class_names[query_class])}</td>'
                   f'<td>{_e(c.class_names[wrong])}</td><td class="num">{count}</td>'
                   f'<td class="num">{share:.0%}</td></tr>')
    out.append('</table>')
    return '\n'.join(out)


def _task_section(c: PageContent, a: TaskAnalysis) -> str:
    key = a.spec.key
    gallery = ' + '.join(a.spec.gallery) + (' (query excluded)' if a.spec.exclude_self else '')
    parts = [f'<h2 id="task-{_e(key)}">{_e(key)}: {_e(a.spec.query)} → {_e(gallery)}</h2>',
             f'<p class="facts">mAP <b>{a.mean_ap:.4f}</b> over {a.ap.size} queries, '
             f'gallery of {a.gallery_labels.size} items; P@{a.top_k} {a.precision_at_k:.3f}</p>']
    figure = c.figures.get(f'class_ap/{key}')
    side = (f'<div><h3>Classes most often retrieved instead of the right one (top-{a.top_k})'
            '</h3>' + _confusion_table(c, a) + '</div>')
    parts.append('<div class="figs">' + (_img(figure, f'per-class AP, {key}') if figure else '')
                 + side + '</div>')
    parts.append(f'<h3>Example queries and their top-{a.top_k}</h3>' + _examples_html(c, a))
    return '\n'.join(parts)


def render_page(c: PageContent) -> str:
    """The whole HTML document."""
    nav = ' '.join(f'<a href="#task-{_e(a.spec.key)}">{_e(a.spec.key)}</a>' for a in c.analyses)
    facts = ' · '.join(f'{_e(k)} <b>{_e(v)}</b>' for k, v in c.facts)
    pr = ''.join(_img(c.figures[name], name.replace('_', ' '))
                 for name in ('pr_bimodal', 'pr_multimodal') if name in c.figures)
    confusion = ''
    if 'confusion' in c.figures:
        confusion = ('<h2 id="confusions">Confusions over all tasks</h2>'
                     '<p class="note">Rows: the query\'s class; columns: a wrong class filling '
                     'its top-k slots, summed over every task'
                     + (f' (the {len(c.confusion_classes)} most confused classes)'
                        if c.confusion_classes else '') + '.</p>'
                     '<div class="figs">' + _img(c.figures['confusion'], 'confusions') + '</div>')
    body = [
        f'<h1>{_e(c.title)}</h1>', f'<p class="facts">{facts}</p>',
        f'<nav><a href="#results">results</a><a href="#pr">precision-recall</a>'
        f'<a href="#confusions">confusions</a> tasks: {nav}</nav>',
        '<h2 id="results">Results</h2>',
        f'<p class="note">{_e(c.results_source)}</p>',
        markdown_tables_to_html(c.results_markdown),
        '<h3>Per task (recomputed here with the evaluator\'s float64 scorer)</h3>',
        _summary_table(c),
        '<h2 id="pr">Precision-recall</h2>',
        '<p class="note">Interpolated precision (the best precision at any recall at or '
        'above the level), averaged over a task\'s queries at 21 recall levels.</p>',
        f'<div class="figs">{pr}</div>', confusion,
    ]
    body += [_task_section(c, a) for a in c.analyses]
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="generator" content="{GENERATOR}">'
            f'<title>{_e(c.title)}</title><style>{_STYLE}</style></head><body>\n'
            + '\n'.join(body) + '\n</body></html>\n')
