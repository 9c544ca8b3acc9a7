"""The browser UI: catalogue grid, product page with "You may also like", photo search, job
progress. Server-rendered Jinja pages and one small stylesheet; no front-end build.

A plain Flask blueprint (not flask-smorest), so none of these pages appear in the OpenAPI
document. Reading needs no API key; searching by photo is a read, so it needs none either.
"""

from web.ui.views import bp

__all__ = ["bp"]
