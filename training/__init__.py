"""Offline tools: dataset conversion, synthetic data, model training and bundles."""
