"""`dcinet report`: a checkpoint's test-set retrieval as a static HTML page (docs/report.md).

Modules, one concept each: `analysis` (per-task precision-recall, per-class AP,
confusions and example queries from features, on the evaluator's own scorer), `plots`
(matplotlib figures), `thumbnails` (small pictures and text snippets of shown items),
`page` (the HTML), `build` (gallery + results + the above -> a folder) and `browser`
(headless Chromium screenshots and a not-blank check).
"""

from dcinet_jax.html_report.build import build_report, write_report

__all__ = ['build_report', 'write_report']
