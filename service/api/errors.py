"""Errors -> HTTP: each blueprint registers the error shape its clients expect.

Own API: {"error": {"code": "...", "message": "..."}} (`register_own`). TF Serving and Open Inference
Protocol v2 clients expect {"error": "..."} (`register_flat`). Errors raised by routing (no such route, wrong
method) happen before any blueprint runs: the app-level handler finds the blueprint that owns the path in the
URL map and answers in its shape; unknown paths get the own shape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Blueprint, Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing.exceptions import RoutingException

from service.errors import DeadlineExceeded, Overloaded, ServiceError
from service.types.errors import Error, ErrorDetail, FlatError

log = logging.getLogger(__name__)

Shape = Callable[[int, str, str], Response]

# Werkzeug's names for HTTP errors, as machine-readable codes.
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}
_SHAPES: dict[str, Shape] = {}


def own_shape(status: int, code: str, message: str) -> Response:
    body = Error(error=ErrorDetail(code=code, message=message)).model_dump_json()
    return Response(body, status=status, mimetype="application/json")


def flat_shape(status: int, code: str, message: str) -> Response:
    return Response(FlatError(error=message).model_dump_json(), status=status, mimetype="application/json")


def register_own(bp: Blueprint) -> None:
    _register(bp, own_shape)


def register_flat(bp: Blueprint) -> None:
    _register(bp, flat_shape)


def register_app(app: Flask) -> None:
    """The fallback for requests no blueprint view saw: routing errors, and errors of app-level routes."""
    app.register_error_handler(ServiceError, lambda exc: _service_error(own_shape, exc))
    app.register_error_handler(HTTPException, _routing_error)
    app.register_error_handler(Exception, lambda exc: _unexpected(own_shape, exc))


def _register(bp: Blueprint, shape: Shape) -> None:
    _SHAPES[bp.name] = shape
    bp.register_error_handler(ServiceError, lambda exc: _service_error(shape, exc))
    bp.register_error_handler(HTTPException, lambda exc: _http_error(shape, exc))
    bp.register_error_handler(Exception, lambda exc: _unexpected(shape, exc))


def _service_error(shape: Shape, exc: ServiceError) -> Response:
    return service_error(shape, exc, g.get("request_id"))


def service_error(shape: Shape, exc: ServiceError, request_id: str | None) -> Response:
    """A ServiceError's answer in `shape` (also used by the hot path, outside any Flask context)."""
    # Shed and expired requests are the server protecting itself, counted in their metrics; a log line of
    # their own each (besides the access line) would cost the most exactly when the server has least.
    if exc.status >= 500 and not isinstance(exc, (Overloaded, DeadlineExceeded)):
        log.error("%s: %s", exc.code, exc.message, extra={"request_id": request_id})
    response = shape(exc.status, exc.code, exc.message)
    if isinstance(exc, Overloaded):
        response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


def _http_error(shape: Shape, exc: HTTPException) -> Response:
    status = exc.code or 500
    if status == 413:
        message = f"request body too large (the limit is {request.max_content_length} bytes)"
    else:
        message = exc.description or exc.name
    response = shape(status, _HTTP_CODES.get(status, exc.name.lower().replace(" ", "_")), message)
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


def _routing_error(exc: HTTPException) -> Response | HTTPException:
    if isinstance(exc, RoutingException):  # redirects (e.g. a missing trailing slash) answer as they are
        return exc
    return _http_error(_owner_shape(exc), exc)


def _owner_shape(exc: HTTPException) -> Shape:
    """The shape of the blueprint whose route matches this path with another method (405), else the own."""
    if request.url_rule is not None:
        return _SHAPES.get(request.blueprint or "", own_shape)
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        adapter = current_app.url_map.bind_to_environ(request.environ)
        try:
            rule, _ = adapter.match(method=next(iter(exc.valid_methods)), return_rule=True)
        except HTTPException:
            return own_shape
        return _SHAPES.get(rule.endpoint.rpartition(".")[0], own_shape)
    return own_shape


def _unexpected(shape: Shape, exc: Exception) -> Response:
    request_id = g.get("request_id")
    log.exception("unhandled error in %s %s", request.method, request.path, extra={"request_id": request_id})
    return shape(500, "internal", f"internal error; quote request id {request_id} when reporting it")
