"""Logging setup: one JSON object per line on stderr (or plain text), and one access line per request.

The access line replaces gunicorn's own access log (leave `accesslog` unset): it carries what gunicorn
cannot know, the model and the digit. Fields: request_id, route, method, status, model, digit, latency_ms,
client.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from pythonjsonlogger.orjson import OrjsonFormatter

from service.settings import Settings

ACCESS = logging.getLogger("service.access")

# An incoming X-Request-ID is echoed and logged, so it must be short and free of anything a log parser or
# a header could choke on; anything else is replaced by a fresh id.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")

_HANDLER_NAME = "mnist"
TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def configure_logging(settings: Settings) -> None:
    """Route every logger to stderr in the configured format and level; safe to call again (replaces)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    if settings.log_format == "json":
        handler.setFormatter(
            OrjsonFormatter(  # python-json-logger's orjson encoder: the same lines, cheaper per request
                "%(levelname)s %(name)s %(message)s %(process)d",
                rename_fields={"levelname": "level", "name": "logger", "process": "pid"},
                timestamp=True,  # ISO 8601, UTC
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    _Direct.handler = handler if settings.log_format == "json" else None
    _Direct.pid = os.getpid()


class _Direct:
    """The JSON handler configured above and this process's id, for the access line's direct write."""

    handler: logging.StreamHandler[Any] | None = None
    pid = 0


def _direct_handler() -> logging.StreamHandler[Any] | None:
    """Our JSON handler, when an access line would reach it and nothing else (no other handler or filter)."""
    handler, root = _Direct.handler, logging.getLogger()
    if handler is None or ACCESS.handlers or ACCESS.filters or handler.filters or root.filters:
        return None
    if not ACCESS.propagate or root.handlers != [handler]:
        return None
    return handler


def _write_direct(
    handler: logging.StreamHandler[Any], level: int, message: str, fields: dict[str, Any]
) -> None:
    """The access line as `OrjsonFormatter` writes it (same keys, same order), without building a LogRecord
    and walking the stack for it: one structured write per request."""
    line = {
        "level": logging.getLevelName(level),
        "logger": ACCESS.name,
        "message": message,
        "pid": _Direct.pid,
        **fields,
        "timestamp": datetime.now(UTC).isoformat(),
    }
    data = orjson.dumps(line, option=orjson.OPT_NON_STR_KEYS).decode() + handler.terminator
    handler.acquire()
    try:
        handler.stream.write(data)
        handler.flush()
    finally:
        handler.release()


def request_id(incoming: str | None) -> str:
    """The id of this request: the caller's X-Request-ID when it is sane, else a new UUID."""
    if incoming and _REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


def log_request(
    *,
    request_id: str,
    route: str,
    method: str,
    status: int,
    latency_ms: float,
    client: str | None = None,
    model: str | None = None,
    digit: int | None = None,
    **extra: Any,
) -> None:
    """The one access line of a request (call from the app's after_request / teardown hook)."""
    fields = {
        "request_id": request_id,
        "route": route,
        "method": method,
        "status": status,
        "latency_ms": round(latency_ms, 3),
        "client": client,
        "model": model,
        "digit": digit,
        **extra,
    }
    level = logging.ERROR if status >= 500 else logging.INFO
    if not ACCESS.isEnabledFor(level):
        return
    handler = _direct_handler()
    if handler is not None and level >= handler.level:
        _write_direct(handler, level, f"{method} {route} {status:d} {latency_ms:.1f}ms", fields)
    else:
        ACCESS.log(level, "%s %s %d %.1fms", method, route, status, latency_ms, extra=fields)
