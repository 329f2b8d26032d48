"""Temporary alias of the old retrieval module; use dcinet_jax.evaluators instead.

Every name re-exported here now lives in `dcinet_jax.evaluators.ranking` (cosine ranking
and AP), `dcinet_jax.evaluators.fgxmedia` (the protocol; the old `evaluate` is
`fgxmedia.evaluate_features`) or `dcinet_jax.evaluators.report` (tables, paper numbers,
results files). This module goes away once every caller has moved.
"""

from dcinet_jax.evaluators import fgxmedia, ranking, report

AP_DEFINITION = fgxmedia.AP_DEFINITION
MODALITY_ORDER = fgxmedia.MODALITY_ORDER
RANKING = fgxmedia.RANKING
SIMILARITY = fgxmedia.SIMILARITY
task_keys = fgxmedia.task_keys
evaluate = fgxmedia.evaluate_features
average_precision = ranking.average_precision
cosine_similarity = ranking.cosine_similarity
mean_average_precision = ranking.mean_average_precision
query_average_precisions = ranking.query_average_precisions
PAPER_REFERENCE = report.PAPER_REFERENCE
format_table = report.format_table
paper_reference_table = report.paper_reference_table
save_results = report.save_results

__all__ = [
    'AP_DEFINITION',
    'MODALITY_ORDER',
    'PAPER_REFERENCE',
    'RANKING',
    'SIMILARITY',
    'average_precision',
    'cosine_similarity',
    'evaluate',
    'format_table',
    'mean_average_precision',
    'paper_reference_table',
    'query_average_precisions',
    'save_results',
    'task_keys',
]
