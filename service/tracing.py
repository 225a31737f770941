"""OpenTelemetry traces, off unless OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set.

One trace per request: the server span continues the caller's W3C `traceparent` (HTTP header or gRPC
metadata) and is handed back in the answer's `traceparent`; below it `decode` (reading and preprocessing
the input), `queue wait` and `batch inference` (with the batch size; recorded by the batcher thread with the
request's context) and, later and in another thread, `store write`, linked to the requests whose records it
writes. Cassandra statements get spans from opentelemetry-instrumentation-cassandra. The SDK reads the
standard variables itself: OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER(_ARG), OTEL_EXPORTER_OTLP_* (OTLP/gRPC).

Off, every hook is one test of `ENABLED` and creates no span object: nothing here costs a request anything.
`configure` runs in each gunicorn worker after the fork (create_app), since the exporter's thread would not
survive a fork.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)

ENABLED = False
SERVICE_NAME = "mnist-service"
TRACEPARENT = "traceparent"
_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
# Records waiting for the store keep their request's span context here until written (bounded).
_MAX_PENDING_LINKS = 100_000
_NOTHING = contextlib.nullcontext()

_tracer: Any = None
_provider: Any = None
_links: dict[uuid.UUID, Any] = {}
_links_lock = threading.Lock()


def configure() -> bool:
    """Start exporting when an OTLP endpoint is configured; True when tracing is on in this process."""
    global ENABLED, _tracer, _provider
    if ENABLED or not any(os.environ.get(name) for name in _ENDPOINT_VARIABLES):
        return ENABLED
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.cassandra import CassandraInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or SERVICE_NAME})
    _provider = TracerProvider(resource=resource)  # the sampler comes from OTEL_TRACES_SAMPLER
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(_provider)
    _tracer = trace.get_tracer("service")
    CassandraInstrumentor().instrument(tracer_provider=_provider)
    ENABLED = True
    log.info("tracing on: OTLP to %s", next(os.environ[n] for n in _ENDPOINT_VARIABLES if os.environ.get(n)))
    return True


def shutdown(timeout_s: float = 5.0) -> None:
    """Export what is buffered (worker exit)."""
    if _provider is not None:
        _provider.force_flush(int(timeout_s * 1000))
        _provider.shutdown()


class ServerSpan:
    """The span of one request, current in this thread until `end`."""

    def __init__(self, name: str, carrier: Any, attributes: dict[str, Any]) -> None:
        from opentelemetry import context, propagate, trace

        parent = propagate.extract(carrier)
        self.span = _tracer.start_span(
            name, context=parent, kind=trace.SpanKind.SERVER, attributes=attributes
        )
        self._token = context.attach(trace.set_span_in_context(self.span, parent))

    @property
    def trace_id(self) -> str:
        return f"{self.span.get_span_context().trace_id:032x}"

    def traceparent(self) -> str:
        """The W3C header naming this span, for the answer."""
        from opentelemetry import propagate, trace

        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(self.span))
        return carrier.get(TRACEPARENT, "")

    def end(self, status_code: int | str, error: bool) -> None:
        from opentelemetry import context, trace

        self.span.set_attribute("response.status", status_code)
        if error:
            self.span.set_status(trace.Status(trace.StatusCode.ERROR))
        self.span.end()
        context.detach(self._token)


def server_span(name: str, carrier: Any, **attributes: Any) -> ServerSpan | None:
    """A request's span continuing the traceparent in `carrier` (headers or gRPC metadata, anything with
    `.get`); None when tracing is off."""
    if not ENABLED:
        return None
    return ServerSpan(name, carrier, attributes)


def span(name: str, **attributes: Any) -> contextlib.AbstractContextManager[Any]:
    """A child span of the current request around a block (a shared no-op when off)."""
    if not ENABLED:
        return _NOTHING
    return _tracer.start_as_current_span(name, attributes=attributes)


def current_context() -> Any:
    """The span context of the current request (to carry into another thread); None when off."""
    if not ENABLED:
        return None
    from opentelemetry import trace

    return trace.get_current_span().get_span_context()


def record_batch(contexts: Sequence[Any], queued_s: Sequence[float], seconds: float, size: int) -> None:
    """From the batcher thread: each request's `queue wait` and its share of one `batch inference`.

    `queued_s[i]` is how long request i waited; the model call took `seconds` and ended just now.
    """
    from opentelemetry import trace

    end_ns = time.time_ns()
    start_ns = end_ns - int(seconds * 1e9)
    for ctx, waited in zip(contexts, queued_s, strict=True):
        if ctx is None or not ctx.is_valid:
            continue
        parent = trace.set_span_in_context(trace.NonRecordingSpan(ctx))
        wait = _tracer.start_span("queue wait", context=parent, start_time=start_ns - int(waited * 1e9))
        wait.end(end_time=start_ns)
        infer = _tracer.start_span(
            "batch inference",
            context=parent,
            start_time=start_ns,
            attributes={"batch.size": size, "batch.requests": len(contexts)},
        )
        infer.end(end_time=end_ns)


def remember(ids: Sequence[uuid.UUID], ctx: Any) -> None:
    """Keep the request's span context for its records, so the later store write can link to it."""
    if ctx is None or not ctx.is_valid:
        return
    with _links_lock:
        if len(_links) + len(ids) > _MAX_PENDING_LINKS:
            _links.clear()  # records that were never written (lost, or another worker's): forget them
        for rid in ids:
            _links[rid] = ctx


def _links_of(records: Sequence[Any]) -> list[Any]:
    from opentelemetry import trace

    with _links_lock:
        found = [_links.pop(rec.id, None) for rec in records]
    # One link per request (its records share the span context); SpanContext itself is not hashable.
    contexts = {(ctx.trace_id, ctx.span_id): ctx for ctx in found if ctx is not None}
    return [trace.Link(ctx) for ctx in contexts.values()]


def store_write(records: Sequence[Any], backend: str) -> contextlib.AbstractContextManager[Any]:
    """Around one write of the write-behind queue (records with an `id`): a span of its own, linked to the
    requests whose records it writes. A tracing failure is logged and never stops the writer thread."""
    if not ENABLED:
        return _NOTHING
    try:
        links = _links_of(records)
    except Exception:
        log.exception("tracing: could not link a store write to its requests")
        return _NOTHING
    attributes = {"store.backend": backend, "store.records": len(records)}
    return _tracer.start_as_current_span("store write", links=links, attributes=attributes)
