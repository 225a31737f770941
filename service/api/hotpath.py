"""A lean WSGI path for the three prediction routes: POST /predict, TF Serving's :predict and v2's infer.

Why it exists: these routes carry nearly all the traffic, and Flask's machinery per request (app and request
contexts, URL matching, before/after hooks, context-local proxies, Response objects) cost about as much CPU
as the model. This path answers them straight from the WSGI environ with the same codecs, the same data plane
(`ServiceState.infer`), the same metrics and the same access line as the Flask routes and hooks.

It takes only what it can answer exactly as Flask would; everything else goes to the Flask app untouched:
other routes and methods, tracing on (the spans come from the Flask hooks), a CORS `Origin` while origins are
configured, a body without Content-Length or over the limit, a path or query with anything unusual in it. A
request refused before the model runs (bad input, a model not served) is handed to Flask with its body, so
every such error is the one Flask's handlers write; an error after that is answered here in the shape the
route's blueprint uses.
"""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import multipart
from flask import Flask
from werkzeug.http import parse_options_header
from werkzeug.wrappers import Response

from service import deadlines, metrics, tracing
from service.api import errors
from service.api.handler import JSON, VERSION_HEADER, Decoded, deadline_of, decode_checked
from service.codecs import own, tfserving, v2
from service.errors import ServiceError
from service.logs import log_request, request_id
from service.state import ServiceState
from service.types.batch import Inference, RequestInfo

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Headers = list[tuple[str, str]]

# Names and versions this path takes (anything else, e.g. percent-decoded text, is Flask's to match).
_NAME = r"[A-Za-z0-9_.-]+"
_QUERY = re.compile(r"[A-Za-z0-9_.=&-]*")
_IMAGE_FIELDS = ("image", "file")
_TRUE = {"1", "true", "yes", "on"}
_DRAINED_BY_GUNICORN = 64 * 1024  # gunicorn.http.parser._DRAIN_MAX_BYTES (gunicorn 27)


@dataclass(frozen=True)
class _Route:
    pattern: re.Pattern[str]
    api: str  # the `api` label of records and metrics, as the Flask route passes it
    label: str  # the route template, as the Flask hooks write it into metrics and the access line
    shape: errors.Shape


_ROUTES = (
    _Route(re.compile(r"/predict"), "predict", "/predict", errors.own_shape),
    _Route(
        re.compile(rf"/v1/models/(?P<name>{_NAME}):predict"), "tfserving", "/v1/models/<name>:predict",
        errors.flat_shape,
    ),
    _Route(
        re.compile(rf"/v1/models/(?P<name>{_NAME})/versions/(?P<version>{_NAME}):predict"), "tfserving",
        "/v1/models/<name>/versions/<version>:predict", errors.flat_shape,
    ),
    _Route(
        re.compile(rf"/v2/models/(?P<name>{_NAME})/infer"), "v2", "/v2/models/<name>/infer", errors.flat_shape
    ),
    _Route(
        re.compile(rf"/v2/models/(?P<name>{_NAME})/versions/(?P<version>{_NAME})/infer"), "v2",
        "/v2/models/<name>/versions/<version>/infer", errors.flat_shape,
    ),
)  # fmt: skip


class _Replay(Exception):
    """The request is refused before the model runs: Flask answers it from the start."""


class _Body:
    """The request body, read from the socket when decoding first needs it: after admission, so a shed
    request is answered without waiting for its upload. gunicorn drains an unread body before the next
    request on the connection, but only up to 64 KiB (more and it closes a connection whose answer said
    keep-alive, which its client may already be reusing): a larger body is read at once."""

    __slots__ = ("data", "environ")

    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ
        self.data: bytes | None = None
        if int(environ["CONTENT_LENGTH"]) > _DRAINED_BY_GUNICORN:
            self.read()

    def read(self) -> bytes:
        if self.data is None:
            try:
                self.data = self.environ["wsgi.input"].read(int(self.environ["CONTENT_LENGTH"]))
            except Exception as exc:
                raise _Unreadable() from exc
        return self.data


class _Unreadable(Exception):
    """The upload could not be read (the client went away): gunicorn handles the original error."""


class HotPath:
    """WSGI middleware in front of the Flask app (`app.wsgi_app`): see the module docstring."""

    def __init__(self, app: Flask, state: ServiceState, cors: bool) -> None:
        self.flask: WSGIApp = app.wsgi_app
        self.state = state
        self.cors = cors  # CORS origins configured: requests with an Origin go to Flask (its hook adds them)
        self.max_body = int(app.config["MAX_CONTENT_LENGTH"])
        self.max_form_memory = int(app.config["MAX_FORM_MEMORY_SIZE"])
        self.max_form_parts = int(app.config["MAX_FORM_PARTS"])

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.perf_counter()
        route, params = self._match(environ)
        if route is None:
            return self.flask(environ, start_response)
        try:
            body = _Body(environ)
            status, headers, answer = self._answer(route, params, environ, body, started)
        except _Replay:
            if body.data is not None:  # read already: Flask reads it again from the start
                environ["wsgi.input"] = io.BytesIO(body.data)
            return self.flask(environ, start_response)
        except _Unreadable as exc:
            raise exc.__cause__ or exc from None
        start_response(status, headers)
        return [answer]

    def _match(self, environ: dict[str, Any]) -> tuple[_Route | None, dict[str, str | None]]:
        """The hot route this request is for, with its path parameters; None: Flask's to answer."""
        if environ.get("REQUEST_METHOD") != "POST" or tracing.ENABLED:
            return None, {}
        if (self.cors and environ.get("HTTP_ORIGIN")) or environ.get("HTTP_TRANSFER_ENCODING"):
            return None, {}
        length = environ.get("CONTENT_LENGTH") or ""
        if not length.isdigit() or int(length) > self.max_body:
            return None, {}
        path = environ.get("PATH_INFO", "")
        for route in _ROUTES:
            found = route.pattern.fullmatch(path)
            if found:
                if route.api == "predict" and not _QUERY.fullmatch(environ.get("QUERY_STRING", "")):
                    return None, {}
                return route, {"name": None, "version": None, **found.groupdict()}
        return None, {}

    def _answer(
        self,
        route: _Route,
        params: dict[str, str | None],
        environ: dict[str, Any],
        body: _Body,
        started: float,
    ) -> tuple[str, Headers, bytes]:
        """Status line, headers and body of the answer (after the access line and metrics are written)."""
        state = self.state
        rid = request_id(environ.get("HTTP_X_REQUEST_ID"))
        args: dict[str, str] = {}
        if route.api == "predict":
            args = _query(environ.get("QUERY_STRING", ""))
            model, version = args.get("model") or None, args.get("version") or None
            decode: Callable[[ServiceState], Decoded] = lambda s: self._own(environ, body.read(), s)  # noqa: E731
        elif route.api == "tfserving":
            model, version = params["name"], params["version"]
            decode = lambda s: tfserving.decode(body.read(), s.limits)  # noqa: E731
        else:
            model, version = params["name"], params["version"]
            header_length = environ.get("HTTP_INFERENCE_HEADER_CONTENT_LENGTH")
            decode = lambda s: v2.decode(body.read(), header_length, s.limits)  # noqa: E731
        try:  # refused before admission (a model not served, a bad X-Request-Timeout): Flask's to answer
            if model is not None:
                state.models.get(model, version)
            timeout_s = deadlines.header_seconds(environ.get("HTTP_X_REQUEST_TIMEOUT"))
        except Exception:
            raise _Replay() from None
        forwarded = environ.get("HTTP_X_FORWARDED_FOR")
        client = forwarded.split(",")[0].strip() if forwarded else environ.get("REMOTE_ADDR")
        answered_by, digit = model or state.models.default, None
        try:
            with state.admission.admit(answered_by, route.api):  # shed (Overloaded) before any decoding
                try:
                    decoded, chosen = decode_checked(state, decode, model)
                except _Unreadable:
                    raise
                except Exception:
                    raise _Replay() from None  # its place is free again before Flask asks for one
                answered_by = chosen or state.models.default
                info = RequestInfo(client, rid, started, deadline_of(decoded, started, timeout_s))
                uploads = getattr(decoded, "uploads", None)
                result = state.infer(decoded.images, chosen, version, route.api, info, uploads)
            answered_by, digit = result.model, int(result.digits[0]) if len(result) == 1 else None
            headers, answer = _encode(route.api, result, decoded, args)
            status, status_line = 200, "200 OK"
        except (_Replay, _Unreadable):
            raise
        except Exception as exc:  # answered in the blueprint's error shape, as Flask's handlers do
            error = self._error(route, exc, rid, environ)
            status, status_line = error.status_code, error.status
            headers, answer = list(error.headers.items()), error.get_data()
        headers.append(("X-Request-ID", rid))
        seconds = time.perf_counter() - started
        metrics.observe_request(route.label, "POST", status, seconds)
        log_request(
            request_id=rid,
            route=route.label,
            method="POST",
            status=status,
            latency_ms=seconds * 1000,
            client=environ.get("REMOTE_ADDR"),
            model=answered_by,
            digit=digit,
        )
        return status_line, headers, answer

    def _own(self, environ: dict[str, Any], body: bytes, state: ServiceState) -> own.OwnRequest:
        """The own API's input, as service/api/predict.py reads it: multipart uploads or the whole body."""
        mimetype, options = parse_options_header(environ.get("CONTENT_TYPE", ""))
        mimetype = mimetype.lower()  # as werkzeug's `request.mimetype`
        if mimetype == "multipart/form-data":
            images, model = self._multipart(body, options.get("boundary", ""))
            return own.decode_files(images, model, state.limits)
        return own.decode_body(body, mimetype, state.limits)

    def _multipart(self, body: bytes, boundary: str) -> tuple[list[bytes], str | None]:
        """The uploads (fields `image`, then `file`) and the first `model` field of a multipart body, as
        werkzeug's form parser reads them (a part with a filename is a file, one without a field), with
        `multipart`'s parser: a sixth of the CPU for a one-file form. Anything it refuses or that is unusual
        (a limit reached, a duplicate or odd header) replays the request, so werkzeug answers it."""
        files: dict[str, list[bytes]] = {name: [] for name in _IMAGE_FIELDS}
        model: str | None = None
        try:
            with multipart.PushMultipartParser(
                boundary, len(body), max_segment_count=self.max_form_parts, strict=True
            ) as parser:
                segment: multipart.MultipartSegment | None = None
                chunks: list[bytes] = []
                for event in parser.parse(body):
                    if isinstance(event, multipart.MultipartSegment):
                        segment, chunks = event, []
                    elif event is not None:
                        chunks.append(event)
                    elif segment is not None:  # the segment's end
                        data = b"".join(chunks)
                        if segment.filename is not None:
                            files.get(segment.name, []).append(data)
                        elif len(data) > self.max_form_memory:
                            raise _Replay()  # werkzeug's 413
                        elif segment.name == "model" and model is None:
                            model = data.decode("utf-8", "replace")
        except multipart.MultipartError:
            raise _Replay() from None
        return [data for name in _IMAGE_FIELDS for data in files[name]], model

    def _error(self, route: _Route, exc: Exception, rid: str, environ: dict[str, Any]) -> Response:
        """What the blueprint's error handlers answer (service/api/errors.py) for an error after decoding."""
        if isinstance(exc, ServiceError):
            return errors.service_error(route.shape, exc, rid)
        log.exception("unhandled error in POST %s", environ.get("PATH_INFO"), extra={"request_id": rid})
        return route.shape(500, "internal", f"internal error; quote request id {rid} when reporting it")


def _query(query: str) -> dict[str, str]:
    """First value of each query argument (what `request.args.get` returns), for the plain queries taken."""
    args: dict[str, str] = {}
    for pair in query.split("&"):
        if pair:
            key, _, value = pair.partition("=")
            args.setdefault(key, value)
    return args


def _encode(api: str, result: Inference, decoded: Any, args: dict[str, str]) -> tuple[Headers, bytes]:
    """(headers, body) of a successful answer, byte for byte what the Flask route sends."""
    extra: Headers = []
    content_type = JSON
    if api == "predict":
        body = own.encode(result, decoded.many, args.get("include_input", "").lower() in _TRUE)
    elif api == "tfserving":
        body = tfserving.encode(result, decoded.columnar)
        extra.append((VERSION_HEADER, result.version))
    else:
        body, header_length = v2.encode(result, decoded)
        if header_length is not None:
            content_type = "application/octet-stream"
            extra.append((v2.HEADER_LENGTH, str(header_length)))
    return [("Content-Type", content_type), ("Content-Length", str(len(body))), *extra], body
