"""`dcinet report`: a checkpoint's test-set retrieval as a static HTML page.

`build_report(config, workdir)` computes the checkpoint's gallery (`dcinet_jax.search.gallery`:
the evaluator's own features, restored as `dcinet eval` restores), reads the results
file of that step (or scores the features with the evaluator when there is none),
analyses every task (`analysis`), draws the figures (`plots`), writes thumbnails of the
shown items (`thumbnails`, payloads from `input_pipeline.fgxmedia.items`) and the page (`page`).
`write_report` does the part after the features, for features from anywhere.

Layout of the output folder (default WORKDIR/report):
  index.html              the page (inline style, no script, relative links only)
  figures/*.png           precision-recall, per-class AP, confusions
  thumbs/<modality>/*.jpg thumbnails of the shown items
A folder that already holds a report has its figures/ and thumbs/ replaced; a folder
holding anything else keeps it (only the report's own files are written).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from dcinet_jax.html_report import analysis, page, plots, thumbnails
from input_pipeline import atomic

__all__ = ['CONFUSION_CLASSES', 'build_report', 'find_results', 'write_report']

CONFUSION_CLASSES = 20      # classes shown in the overall confusion heatmap at most
_FGXMEDIA = 'fgxmedia'


def build_report(config: Any, workdir: str | Path, *, out: str | Path | None = None,
                 step: int | None = None, top_k: int = 5, num_queries: int = 3) -> Path:
    """Writes the report of checkpoint `step` (default: latest) of `workdir`; returns
    the path of its index.html. ValueError (one line) for a method whose evaluator is
    not FG-XMedia retrieval."""
    from dcinet_jax.search import gallery as gallery_lib
    from dcinet_jax import methods
    evaluator = methods.evaluator_name(methods.from_config(config), config)
    if evaluator != _FGXMEDIA:
        raise ValueError(f'config.method={config.method!r} is scored by the {evaluator!r} '
                         'evaluator; the report covers FG-XMedia retrieval (methods dcinet, '
                         'fgcrossnet)')
    workdir = Path(workdir)
    out = Path(out) if out is not None else workdir / 'report'
    atomic.check_writable_folder(out, 'the report')   # before minutes of work
    gallery = gallery_lib.compute_gallery(config, workdir, step=step)
    features = {m: (p.features, p.labels) for m, p in gallery.modalities.items()}
    results, source = find_results(workdir, gallery.step)
    if results is None:
        from dcinet_jax.evaluators import fgxmedia
        results = {'step': gallery.step, **fgxmedia.evaluate(features, config=config)}
        source = ('No results file for this step in the workdir: scored here by the '
                  'FG-XMedia evaluator with config.eval.')
    from input_pipeline.fgxmedia import items
    try:
        return write_report(
            out, features=features,
            ids={m: p.ids for m, p in gallery.modalities.items()},
            read_items=lambda m: items.read_items(config, 'test', m),
            class_names=items.class_names(config), num_classes=int(config.data.num_classes),
            results=results, results_source=source, step=gallery.step,
            exclude_self=bool(config.eval.exclude_self), top_k=top_k,
            num_queries=num_queries,
            facts=[('method', config.method), ('workdir', str(workdir)),
                   ('data', str(config.data_dir)), ('data card', _data_line(results, config)),
                   ('feature', config.eval.get('feature'))])
    except OSError as e:   # a write under `out` failed (not a read of the data)
        if not e.filename or not Path(e.filename).absolute().is_relative_to(out.absolute()):
            raise
        raise atomic.NotWrittenError(out, e, _results_markdown(results)) from e


def _data_line(results: Mapping, config: Any) -> str:
    """The results file's data card in one line; the prepared data's own when the
    results were scored here (or by a version that did not record it)."""
    from dcinet_jax import methods
    from input_pipeline import data_card
    card = results.get('data')
    describe = getattr(methods.from_config(config), 'data_description', None)
    if card is None and describe is not None:
        card = describe(config)
    return data_card.one_line(card)


def find_results(workdir: Path, step: int) -> tuple[dict | None, str]:
    """(results of `step` from WORKDIR/eval/<step>/results.json, or the latest file
    when it is of that step; None otherwise, what was read)."""
    for path in (workdir / 'eval' / str(int(step)) / 'results.json',
                 workdir / 'eval' / 'results.json'):
        if path.is_file():
            try:
                results = json.loads(path.read_text(encoding='utf-8'))
            except ValueError as e:
                raise ValueError(f'{path}: not valid JSON ({e})') from None
            if int(results.get('step', -1)) == int(step):
                rel = path.relative_to(workdir).as_posix()
                return results, f'From the evaluation results file {rel} (step {step}).'
    return None, ''


def write_report(out: Path, *, features: Mapping[str, tuple[np.ndarray, np.ndarray]],
                 ids: Mapping[str, Sequence[str]], read_items: Callable[[str], Sequence],
                 class_names: Sequence[str], num_classes: int, results: Mapping,
                 results_source: str, step: int, exclude_self: bool = False,
                 top_k: int = 5, num_queries: int = 3,
                 facts: Sequence[tuple[str, Any]] = ()) -> Path:
    """The report of `features` = {modality: (features, labels)} in folder `out`.

    ids: each modality's item ids (row order of the features); read_items(modality):
    that modality's items (`input_pipeline.fgxmedia.items.Item`) in the same order; results:
    the evaluator's results dict shown in the tables. Returns out/index.html.
    """
    if top_k < 1 or num_queries < 0:
        raise ValueError(f'top_k must be >= 1 and queries >= 0, got {top_k} and {num_queries}')
    names = list(class_names)[:num_classes]
    names += [f'class {k}' for k in range(len(names), num_classes)]
    analyses = analysis.analyse(features, num_classes=num_classes, exclude_self=exclude_self,
                                top_k=top_k, num_examples=num_queries)
    out = Path(out)
    _clear_previous(out)
    figures = _figures(out, analyses, names)
    shown = _shown_items(analyses)
    confusion_classes = _most_confused(analyses, num_classes)
    figures['confusion'] = _rel(plots.confusion_heatmap(
        sum(a.confusion for a in analyses), confusion_classes, names,
        out / 'figures' / 'confusions.png',
        title=f'wrong classes in the top-{analyses[0].top_k}, all tasks'), out)
    items = _thumbnails(out, shown, ids, read_items)
    maps = {**results.get('bimodal', {}), **results.get('multimodal', {})}
    content = page.PageContent(
        title=f'Retrieval report, step {step}',
        facts=[(k, v) for k, v in facts if v not in (None, '')]
        + [('step', step), ('test items', ', '.join(f'{m} {len(f[1])}'
                                                    for m, f in features.items())),
           ('top-k', analyses[0].top_k)],
        results_markdown=_results_markdown(results), results_source=results_source,
        analyses=analyses, class_names=names, figures=figures, items=items,
        results_maps={a.spec.key: maps.get(a.spec.key) for a in analyses},
        confusion_classes=confusion_classes if len(confusion_classes) < num_classes else ())
    index = out / 'index.html'
    index.write_text(page.render_page(content), encoding='utf-8')
    return index


def _clear_previous(out: Path) -> None:
    """Remove figures/ and thumbs/ of an earlier report in `out` (never anything else)."""
    index = out / 'index.html'
    if index.is_file() and f'content="{page.GENERATOR}"' in index.read_text(errors='replace'):
        for sub in ('figures', 'thumbs'):
            shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def _rel(path: Path, out: Path) -> str:
    return Path(path).relative_to(out).as_posix()


def _figures(out: Path, analyses: Sequence[analysis.TaskAnalysis],
             names: Sequence[str]) -> dict[str, str]:
    figures = {}
    for group, multimodal in (('pr_bimodal', False), ('pr_multimodal', True)):
        curves = [(a.spec.key, a.precision) for a in analyses if a.spec.multimodal == multimodal]
        if curves:
            title = 'X→all tasks' if multimodal else 'bi-modal tasks'
            figures[group] = _rel(plots.pr_curves(curves, analysis.RECALL_LEVELS,
                                                  out / 'figures' / f'{group}.png',
                                                  title=title), out)
    for a in analyses:
        figures[f'class_ap/{a.spec.key}'] = _rel(plots.class_ap_bars(
            a.class_ap, names, a.mean_ap, out / 'figures' / f'class_ap_{a.spec.key}.png',
            title=f'{a.spec.key}: AP per query class'), out)
    return figures


def _most_confused(analyses: Sequence[analysis.TaskAnalysis], num_classes: int) -> list[int]:
    """Every class when there are few; else the CONFUSION_CLASSES with the most wrong
    slots (as query or as the wrong answer), in class order."""
    if num_classes <= CONFUSION_CLASSES:
        return list(range(num_classes))
    total = sum(a.confusion for a in analyses)
    weight = total.sum(axis=0) + total.sum(axis=1)
    top = np.lexsort((np.arange(num_classes), -weight))[:CONFUSION_CLASSES]
    return sorted(int(c) for c in top)


def _shown_items(analyses: Sequence[analysis.TaskAnalysis]) -> dict[str, set[int]]:
    """modality -> indices of every item the page shows (example queries and their top-k)."""
    shown: dict[str, set[int]] = {}
    for a in analyses:
        for ex in a.examples:
            shown.setdefault(a.spec.query, set()).add(ex.query)
            for g in ex.retrieved:
                modality, local = a.gallery_item(int(g))
                shown.setdefault(modality, set()).add(local)
    return shown


def _thumbnails(out: Path, shown: Mapping[str, set[int]], ids: Mapping[str, Sequence[str]],
                read_items: Callable[[str], Sequence]) -> dict:
    result = {}
    for modality, indices in shown.items():
        items = read_items(modality)
        if len(items) != len(ids[modality]):
            raise ValueError(f'{modality}: {len(items)} prepared items but '
                             f'{len(ids[modality])} feature rows')
        for i in sorted(indices):
            item = items[i]
            if item.id != ids[modality][i]:
                raise ValueError(f'{modality} row {i}: the prepared item is {item.id!r} but '
                                 f'the features belong to {ids[modality][i]!r}')
            thumb = thumbnails.make_thumbnail(modality, item.payload,
                                              out / 'thumbs' / modality, str(i), out)
            result[(modality, i)] = (item.id, thumb)
    return result


def _results_markdown(results: Mapping) -> str:
    from dcinet_jax.evaluators import fgxmedia
    return fgxmedia.format_table(results, with_paper=True)
