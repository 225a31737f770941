"""The web page: draw or upload a digit at `/`, browse past predictions at `/history`.

Every asset is served from `service/static`, and a Content-Security-Policy that allows only this origin keeps
it that way: the page works offline and in clusters without egress.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, render_template

from service.api import errors

PACKAGE_DIR = Path(__file__).resolve().parent.parent

bp = Blueprint(
    "web",
    __name__,
    static_folder=str(PACKAGE_DIR / "static"),
    static_url_path="/static",
    template_folder=str(PACKAGE_DIR / "templates"),
)
errors.register_own(bp)

# 'self' only: a script, style or image from any other host is refused by the browser, so a stray CDN link
# fails loudly in the browser tests instead of silently needing internet access in production.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)


@bp.after_request
def _security_headers(response: Response) -> Response:
    """Lock the page to its own origin (see CONTENT_SECURITY_POLICY)."""
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


@bp.get("/")
def index() -> str:
    """The drawing page."""
    return render_template("index.html", page="draw")


@bp.get("/history")
def history() -> str:
    """Recent predictions with thumbnails, filters, paging and feedback labels."""
    return render_template("history.html", page="history")
