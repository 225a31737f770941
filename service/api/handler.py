"""What every blueprint shares: the worker's state, the request's identity, and the one inference handler.

`infer` is the handler body of every prediction route (own API, TF Serving, v2): it tells the batcher that
images are on their way while the protocol's codec decodes them, runs the data plane, and leaves the model
and digit for the access log line. A route only reads its body and encodes the answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, TypeVar

import numpy as np
from flask import Response, current_app, g, request

from service import deadlines, tracing
from service.inference import ServedModel
from service.state import ServiceState
from service.types.batch import Inference, RequestInfo

EXTENSION = "mnist"
JSON = "application/json"
# The version that answered, on answers whose protocol has no field for it (TF Serving REST).
VERSION_HEADER = "X-Model-Version"


class Decoded(Protocol):
    """What a codec returns: at least the images."""

    @property
    def images(self) -> np.ndarray: ...


R = TypeVar("R", bound=Decoded)


def current() -> ServiceState:
    """The state of the app handling this request."""
    state: ServiceState = current_app.extensions[EXTENSION]
    return state


def request_info(deadline: float | None = None) -> RequestInfo:
    """Who is asking, for the records of this request, and until when it waits for the answer."""
    route = request.access_route
    return RequestInfo(
        client=route[0] if route else request.remote_addr,
        request_id=g.get("request_id"),
        started=g.get("started", time.perf_counter()),
        deadline=deadline,
    )


def decode_checked(
    state: ServiceState, decode: Callable[[ServiceState], R], model: str | None
) -> tuple[R, str | None]:
    """Decoding, after the caller has checked that `model` (from path or query) is served (no side effects,
    so a failure can be answered again from the start): the decoded request, and the model to ask (None: the
    default). The model named in the request wins over one named in the body (`decoded.model`)."""
    with state.models.arrivals.expect(), tracing.span("decode"):  # tells the batcher images are coming
        decoded = decode(state)
    for named in getattr(decoded, "named", ()):  # a model named anywhere in the request must be served
        state.models.get(named)
    return decoded, model or getattr(decoded, "model", None)


def deadline_of(decoded: object, started: float, timeout_s: float | None) -> float | None:
    """The request's deadline: the earliest of X-Request-Timeout (`timeout_s`) and the body's own (v2
    `timeout`), counted from the request's start."""
    return deadlines.earliest(started, timeout_s, deadlines.v2_seconds(getattr(decoded, "timeout_us", 0)))


def infer(
    api: str,
    decode: Callable[[ServiceState], R],
    model: str | None = None,
    version: str | None = None,
) -> tuple[R, Inference]:
    """Admit (or shed), decode (announced to the batcher), run the model, queue the records (see
    `decode_checked` and `deadline_of`)."""
    state = current()
    if model is not None:
        state.models.get(model, version)  # a 404 before the body is read and before admission (shed counts
        # only served model names)
    timeout_s = deadlines.header_seconds(request.headers.get(deadlines.TIMEOUT_HEADER))
    with state.admission.admit(model or state.models.default, api):
        decoded, chosen = decode_checked(state, decode, model)
        g.model = chosen or state.models.default
        deadline = deadline_of(decoded, g.get("started", time.perf_counter()), timeout_s)
        result = state.infer(
            decoded.images, chosen, version, api, request_info(deadline), getattr(decoded, "uploads", None)
        )
    g.model = result.model
    g.digit = int(result.digits[0]) if len(result) == 1 else None
    return decoded, result


def described(name: str, version: str | None = None) -> ServedModel:
    """The version a status or metadata route reports: the one named, else the highest loaded one (never
    a canary draw, so the answer does not change from call to call)."""
    registry = current().models
    if version is None:
        loaded = registry.versions(name)
        version = max(loaded, key=int) if loaded else None
    return registry.get(name, version)


def json_response(body: bytes, status: int = 200) -> Response:
    """An answer whose JSON a codec or a pydantic model already wrote."""
    return Response(body, status=status, mimetype=JSON)
