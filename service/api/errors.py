"""Errors -> HTTP, in one place and in the shape each protocol's clients expect.

Own API: {"error": {"code": "...", "message": "..."}}. TF Serving and Open Inference Protocol v2 clients
expect {"error": "..."}, so paths under /v1/ and /v2/ get that. Unknown routes and wrong methods are JSON too.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from service.errors import ServiceError

log = logging.getLogger(__name__)

_FLAT_PREFIXES = ("/v1/", "/v2/")
_FLAT_PATHS = ("/v2",)

# Werkzeug's names for HTTP errors, as machine-readable codes.
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


def error_response(status: int, code: str, message: str) -> tuple[Response, int]:
    """The JSON error body for this request's protocol."""
    path = request.path
    if path.startswith(_FLAT_PREFIXES) or path in _FLAT_PATHS:
        return jsonify(error=message), status
    return jsonify(error={"code": code, "message": message}), status


def _service_error(exc: ServiceError) -> tuple[Response, int]:
    if exc.status >= 500:
        log.error("%s: %s", exc.code, exc.message, extra={"request_id": g.get("request_id")})
    return error_response(exc.status, exc.code, exc.message)


def _http_error(exc: HTTPException) -> tuple[Response, int] | Response:
    status = exc.code or 500
    if status == 413:
        message = f"request body too large (the limit is {request.max_content_length} bytes)"
    else:
        message = exc.description or exc.name
    response, status = error_response(
        status, _HTTP_CODES.get(status, exc.name.lower().replace(" ", "_")), message
    )
    if status == 405 and exc.response is None:
        allowed = getattr(exc, "valid_methods", None)
        if allowed:
            response.headers["Allow"] = ", ".join(allowed)
    return response, status


def _unexpected(exc: Exception) -> tuple[Response, int]:
    request_id = g.get("request_id")
    log.exception("unhandled error in %s %s", request.method, request.path, extra={"request_id": request_id})
    return error_response(500, "internal", f"internal error; quote request id {request_id} when reporting it")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ServiceError, _service_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
