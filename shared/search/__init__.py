"""Nearest-neighbour search over cached float32 matrices (numpy only; import-light)."""
