"""Retrieval over a trained model: a checkpoint's features of a split with item ids (`gallery`),
saved indexes (`index`, `dcinet index`) and queries (`query`, `dcinet search`); docs/search.md."""
