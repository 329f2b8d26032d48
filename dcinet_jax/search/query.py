"""`dcinet search`: the gallery items nearest to raw query files (docs/search.md).

A query file is preprocessed exactly as training and evaluation preprocess that
file (`input_pipeline.fgxmedia.raw_query`), embedded by the checkpoint in eval mode with the
evaluator's feature extraction, and ranked against a saved index
(`search_index`) by cosine similarity in float64 with ties by gallery position, as
the evaluator ranks (`evaluators.ranking`). Every modality of the index is one gallery
(`--modality all`, stacked in the index's modality order) or one modality is.

The index must come from the checkpoint in use: same step, same weights, same
feature-shaping config fields (`gallery.Gallery.check_source`); otherwise search
refuses in one line and says how to rebuild. Without an index of that name, the
default one (the prepared test split) is built on first use, said on stderr.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dcinet_jax.search import gallery as gallery_lib, index as search_index

ALL = 'all'


def _query_inputs(config: Any, queries: Sequence[str], query_modality: str | None):
    """[(path, modality)], {modality: (x, None)} and each query's row in its modality."""
    from input_pipeline.fgxmedia import raw_query
    per_modality: dict[str, list] = {}
    where = []
    for q in queries:
        modality, x = raw_query.model_input(q, config, query_modality)
        rows = per_modality.setdefault(modality, [])
        where.append((q, modality, len(rows)))
        rows.append(x)
    return where, {m: (np.stack(xs), None) for m, xs in per_modality.items()}


def _item_path(g: gallery_lib.Gallery, item_id: str) -> str:
    """Where an item lives: the folder file (folder index), the file in the prepared
    data's manual dir when it is still there, else its id."""
    source = g.meta.get('source', {})
    modality, rel = item_id.split('/', 1)
    if 'folder' in source:
        return str(Path(source['folder']) / rel)
    root = source.get('root')
    if root:
        from input_pipeline.fgxmedia.lists import MODALITY_DIRS
        for base in [Path(root)] + [Path(root) / d for d in MODALITY_DIRS.get(modality, ())]:
            if (base / rel).exists():
                return str(base / rel)
    return item_id


def load_index(config: Any, workdir: str, name: str, restored,
               config_args: Sequence[str] = ()) -> gallery_lib.Gallery:
    """The index `name`, built first when it is the default and missing; checked
    against the restored checkpoint. `config_args` (`--config FILE --config.x=y ...` as
    given to the command) make the suggested rebuild command one that matches."""
    path = search_index.index_path(workdir, name)
    _, variables, step = restored
    if not (path / gallery_lib.META_FILE).is_file():
        if name != search_index.DEFAULT_SPLIT:
            raise FileNotFoundError(f'no index {name!r} in {path.parent}: build it with '
                                    f'`dcinet index` (--name {name})')
        search_index.note(f'no index yet: indexing the prepared {name} split of every '
                          f'modality with checkpoint step {step} into {path}')
        search_index.build_index(config, workdir, split=name, restored=restored)
    g = gallery_lib.Gallery.load(path)
    source = g.meta.get('source', {})
    how = (f'--folder {source["folder"]}' if 'folder' in source
           else f'--split {source.get("split", name)}')
    fields = gallery_lib.fingerprint_fields(config)
    args = shlex.join(config_args) if config_args else '--config FILE' + ''.join(
        f' --config.{k}={v}' for k, (_, v) in gallery_lib.changed_fields(
            g.config_record, fields).items())
    g.check_source(step=step, fingerprint=gallery_lib.config_fingerprint(config),
                   weights=gallery_lib.weights_digest(variables), what=f'index {name!r}',
                   fields=fields,
                   hint=f'rebuild it: dcinet index {args} --workdir {workdir} {how}'
                        f' --name {name} --step {step}')
    return g


def search(config: Any, workdir: str, queries: Sequence[str], *, top_k: int = 10,
           modality: str = ALL, index: str = search_index.DEFAULT_SPLIT,
           step: int | None = None, query_modality: str | None = None,
           config_args: Sequence[str] = ()) -> dict:
    """Ranked results of every query: {'index', 'step', 'queries': [{'query',
    'modality', 'results': [{'rank', 'score', 'label', 'class', 'modality', 'id',
    'path'}]}]}."""
    from dcinet_jax.evaluators import ranking
    from input_pipeline.fgxmedia import items
    if not queries:
        raise ValueError('give at least one --query FILE')
    if top_k < 1:
        raise ValueError(f'--top_k={top_k}: must be >= 1')
    from input_pipeline.fgxmedia import raw_query
    for q in queries:   # before the (slow) restore: a mistyped path fails at once
        if not Path(q).is_file():
            raise FileNotFoundError(f'--query {q}: no such file')
        if query_modality is None:
            raw_query.modality_of(q)
    restored = search_index.restore(config, workdir, step)
    g = load_index(config, workdir, index, restored, config_args)
    if modality != ALL and modality not in g.modalities:
        raise ValueError(f'--modality {modality}: index {index!r} holds '
                         f'{", ".join(g.modalities)} (or use all)')
    shown = list(g.modalities) if modality == ALL else [modality]
    feats = np.concatenate([g.modalities[m].features for m in shown])
    owner = [(m, i) for m in shown for i in range(len(g.modalities[m].ids))]
    trainer, variables, _ = restored
    where, inputs = _query_inputs(config, queries, query_modality)
    query_feats = search_index.embed_inputs(config, trainer, variables, inputs)
    names = g.meta.get('class_names') or items.class_names(config)
    out = []
    for path, m, row in where:
        scores = ranking.cosine_similarity(query_feats[m][row:row + 1], feats)
        order = ranking.stable_ranking(scores)[0, :top_k]
        results = []
        for rank, j in enumerate(order, 1):
            gm, i = owner[j]
            part = g.modalities[gm]
            label = int(part.labels[i])
            results.append({'rank': rank, 'score': float(scores[0, j]), 'label': label,
                            'class': names[label] if 0 <= label < len(names) else '?',
                            'modality': gm, 'id': part.ids[i],
                            'path': _item_path(g, part.ids[i])})
        out.append({'query': str(path), 'modality': m, 'results': results})
    return {'index': index, 'step': int(g.step), 'queries': out}


def format_results(found: dict) -> str:
    """A ranked table per query (rank, score, class, modality, path)."""
    blocks = []
    for q in found['queries']:
        rows = [f'query {q["query"]} ({q["modality"]}); index {found["index"]!r}, '
                f'step {found["step"]}',
                f'{"rank":>4}  {"score":>7}  {"class":<32}  {"modality":<8}  path']
        for r in q['results']:
            rows.append(f'{r["rank"]:>4}  {r["score"]:>7.4f}  {r["class"]:<32}  '
                        f'{r["modality"]:<8}  {r["path"]}')
        blocks.append('\n'.join(rows))
    return '\n\n'.join(blocks)


def search_main(config: Any, workdir: str, queries: Sequence[str], *, top_k: int,
                modality: str, index: str, step: int | None, query_modality: str | None,
                as_json: bool, config_args: Sequence[str] = ()) -> dict:
    """`dcinet search`: print the table (or JSON) of `search`."""
    found = search(config, workdir, queries, top_k=top_k, modality=modality, index=index,
                   step=step, query_modality=query_modality, config_args=config_args)
    print(json.dumps(found, indent=1) if as_json else format_results(found))
    return found
