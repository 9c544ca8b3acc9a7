"""The versioned JSON API (``/api/v1``) and the media route, as flask-smorest blueprints."""
