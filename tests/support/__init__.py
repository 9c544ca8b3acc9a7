"""Helpers the tests share: a throw-away database, a real Celery worker process, images."""
