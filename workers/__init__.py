"""Celery workers: ingestion (detect, crop, embed), query embedding and cache rebuilds."""
