"""Periodic upkeep run by Celery beat: re-enqueue stalled jobs, delete unreferenced media."""
