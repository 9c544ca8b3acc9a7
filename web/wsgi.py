"""WSGI entry point for gunicorn (``web.wsgi:app``): the only place the web tier sets up logging."""

from shared.config import get_settings
from shared.logs import configure_logging
from web import create_app

_settings = get_settings()
configure_logging(_settings.log_level, _settings.log_json)
app = create_app(_settings)
