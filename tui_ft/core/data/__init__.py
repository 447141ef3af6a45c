"""Data in: Matbench JSON and own-data sources, splits, the demo datasets, downloads,
and the crystal-graph cache and its packed store."""
