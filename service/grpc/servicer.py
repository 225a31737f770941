"""inference.GRPCInferenceService: the Open Inference Protocol v2 over gRPC, on the worker's data plane.

Each RPC runs in the gRPC server's thread pool of the gunicorn worker (service/grpc/server.py) and calls
the same `ServiceState` as the REST blueprints: same micro-batcher, records, metrics (plus mnist_grpc_* per
call) and error types, which `_rpc` maps to gRPC status codes. One access log line per call, like HTTP's.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from service import deadlines, metrics, tracing, v2_info
from service.codecs import v2_grpc
from service.errors import NotReady, Overloaded, ServiceError
from service.logs import log_request, request_id
from service.state import ServiceState
from service.types.batch import RequestInfo

log = logging.getLogger(__name__)

API = "v2-grpc"
SERVICE = "inference.GRPCInferenceService"
REQUEST_ID_KEY = "x-request-id"
# Trailing metadata of a shed call (gRPC's retry design, A6): a retry policy waits this long before retrying.
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"

# HTTP status of a ServiceError -> gRPC code (the protocol's mapping of the REST errors).
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
# gRPC code -> the HTTP-like status of the access log line (its level: errors at >= 500).
_LOG_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

F = TypeVar("F", bound=Callable[..., Any])


class _Call:
    """What the access line of one call needs, filled in by the RPC as it learns it."""

    __slots__ = ("digit", "model", "request_id", "span", "started")

    def __init__(self, context: grpc.ServicerContext, endpoint: str) -> None:
        self.started = time.perf_counter()
        metadata = {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}
        self.request_id = request_id(metadata.get(REQUEST_ID_KEY))
        self.model: str | None = None
        self.digit: int | None = None
        self.span = (
            tracing.server_span(endpoint, metadata, **{"rpc.system": "grpc", "request.id": self.request_id})
            if tracing.ENABLED
            else None
        )


def _rpc(method: F) -> F:
    """Request id, error -> status code, access line and request metrics around one RPC."""
    name = method.__name__
    endpoint = f"/{SERVICE}/{name}"

    @functools.wraps(method)
    def wrapper(self: InferenceServicer, request: Any, context: grpc.ServicerContext) -> Any:
        call = _Call(context, endpoint)
        answer_metadata = [(REQUEST_ID_KEY, call.request_id)]
        if call.span is not None:
            answer_metadata.append((tracing.TRACEPARENT, call.span.traceparent()))
        context.send_initial_metadata(answer_metadata)
        code, message = grpc.StatusCode.OK, ""
        try:
            return method(self, request, context, call)
        except ServiceError as exc:
            code, message = _CODES.get(exc.status, grpc.StatusCode.INTERNAL), exc.message
            if isinstance(exc, Overloaded):  # gRPC's retry pushback: when a retrying client may try again
                context.set_trailing_metadata(((RETRY_PUSHBACK_KEY, str(exc.retry_after_s * 1000)),))
        except FutureTimeout:
            code, message = grpc.StatusCode.DEADLINE_EXCEEDED, "the model did not answer in time"
        except Exception:
            code = grpc.StatusCode.INTERNAL
            message = f"internal error; quote request id {call.request_id} when reporting it"
            self.log_unexpected(endpoint, call)
        finally:
            seconds = time.perf_counter() - call.started
            metrics.observe_rpc(name, code.name, seconds)
            traced: dict[str, str] = {}
            if call.span is not None:
                traced["trace_id"] = call.span.trace_id
                call.span.end(code.name, _LOG_STATUS.get(code, 500) >= 500)
            log_request(
                request_id=call.request_id,
                route=endpoint,
                method="GRPC",
                status=_LOG_STATUS.get(code, 500),
                latency_ms=seconds * 1000,
                client=_client(context.peer()),
                model=call.model,
                digit=call.digit,
                protocol="grpc",
                grpc_status=code.name,
                **traced,
            )
        context.abort(code, message)  # raises: the call ends with this status

    return wrapper  # type: ignore[return-value]


def _client(peer: str) -> str | None:
    """gRPC's peer ("ipv4:127.0.0.1:5000", "ipv6:[::1]:5000") -> the address alone."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return peer or None


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """The RPCs this server implements; the rest (shared memory, streaming, load/unload, trace and log
    settings) answer UNIMPLEMENTED through the generated base class."""

    def __init__(self, state: ServiceState) -> None:
        self.state = state

    def log_unexpected(self, endpoint: str, call: _Call) -> None:
        log.exception("unhandled error in %s", endpoint, extra={"request_id": call.request_id})

    @_rpc
    def ServerLive(self, request: Any, context: Any, call: _Call) -> service_pb2.ServerLiveResponse:
        return service_pb2.ServerLiveResponse(live=True)

    @_rpc
    def ServerReady(self, request: Any, context: Any, call: _Call) -> service_pb2.ServerReadyResponse:
        return service_pb2.ServerReadyResponse(ready=self.state.models.ready and not self.state.stopped)

    @_rpc
    def ModelReady(self, request: Any, context: Any, call: _Call) -> service_pb2.ModelReadyResponse:
        model = self.state.models.get(request.name, request.version or None)
        return service_pb2.ModelReadyResponse(ready=model.batcher.alive and not self.state.stopped)

    @_rpc
    def ServerMetadata(self, request: Any, context: Any, call: _Call) -> service_pb2.ServerMetadataResponse:
        return _parse(v2_info.server_metadata().model_dump(), service_pb2.ServerMetadataResponse())

    @_rpc
    def ModelMetadata(self, request: Any, context: Any, call: _Call) -> service_pb2.ModelMetadataResponse:
        model = self.state.models.get(request.name, request.version or None)
        return _parse(v2_info.model_metadata(model).model_dump(), service_pb2.ModelMetadataResponse())

    @_rpc
    def ModelConfig(self, request: Any, context: Any, call: _Call) -> service_pb2.ModelConfigResponse:
        model = self.state.models.get(request.name, request.version or None)
        config = _parse(v2_info.model_config(model), model_config_pb2.ModelConfig())
        return service_pb2.ModelConfigResponse(config=config)

    @_rpc
    def ModelStatistics(self, request: Any, context: Any, call: _Call) -> service_pb2.ModelStatisticsResponse:
        stats = v2_info.model_statistics(self.state.models, request.name or None, request.version or None)
        return _parse(stats, service_pb2.ModelStatisticsResponse())

    @_rpc
    def RepositoryIndex(self, request: Any, context: Any, call: _Call) -> service_pb2.RepositoryIndexResponse:
        answer = service_pb2.RepositoryIndexResponse()
        for model in self.state.models.models.values():
            ready = model.batcher.alive
            if request.ready and not ready:
                continue
            answer.models.add(
                name=model.name, version=model.version, state="READY" if ready else "UNAVAILABLE"
            )
        return answer

    @_rpc
    def ModelInfer(self, request: Any, context: Any, call: _Call) -> service_pb2.ModelInferResponse:
        state = self.state
        if state.stopped:
            raise NotReady("the server is shutting down")
        name, version = request.model_name, request.model_version or None
        call.model = name
        state.models.get(name, version)  # an unknown model is NOT_FOUND before the input is decoded
        remaining = context.time_remaining()  # seconds to the call's deadline; None without one
        # ... as seconds from the call's start, like the v2 `timeout` parameter
        grpc_timeout = None if remaining is None else remaining + time.perf_counter() - call.started
        with state.admission.admit(name or state.models.default, API):
            with state.models.arrivals.expect(), tracing.span("decode"):  # the batcher: images are coming
                decoded = v2_grpc.decode(request, state.limits)
            deadline = deadlines.earliest(
                call.started, grpc_timeout, deadlines.v2_seconds(decoded.timeout_us)
            )
            info = RequestInfo(
                client=_client(context.peer()),
                request_id=call.request_id,
                started=call.started,
                deadline=deadline,
            )
            result = state.infer(decoded.images, name, version, API, info)
        call.model = result.model
        call.digit = int(result.digits[0]) if len(result) == 1 else None
        return v2_grpc.encode(result, decoded)


def _parse(doc: dict[str, Any], message: Any) -> Any:
    """The dicts v2_info builds for REST -> the generated message (fields REST has beyond it are dropped)."""
    return json_format.ParseDict(doc, message, ignore_unknown_fields=True)
