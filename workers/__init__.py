"""Celery workers: ingestion (detect, crop, embed), searches, and neighbour-list maintenance."""
