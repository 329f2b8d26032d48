"""Built-in demo data sets, each written in a real format's exact on-disk layout (`dcinet demo-data`).

One module per generator (FG-XMedia easy and hard, VEGAS/AVE, precomp) plus `layout`, the
FG-XMedia folder writer both FG-XMedia generators share; docs/data.md#demo-data.
"""
