"""The operator dashboard: ``GET /admin`` serves one self-contained HTML page.

The page holds no data, so it is public; everything it shows it fetches from the admin API
(``/v1/admin/...``) with the admin key, in the browser. It is inline CSS and JS with no
external resources, and the Content-Security-Policy allows nothing else.
"""

from __future__ import annotations

from importlib import resources

from flask import Blueprint, Response

bp = Blueprint("dashboard", __name__)

PAGE = resources.files("api").joinpath("static/admin.html").read_bytes()

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'"
)


@bp.get("/admin")
@bp.get("/admin/")
def page() -> Response:
    response = Response(PAGE, mimetype="text/html")
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cache-Control"] = "no-cache"
    return response
