"""The v2 protocol's model repository extension: list the versions on disk, load (optionally pinned to
versions) and unload a model at run time, so a deploy tool can pin or roll back without touching files.

Every route needs `Authorization: Bearer <MNIST_ADMIN_TOKEN>`; with no token set the routes are off (403).
The registry does the work (`index`, `load_model`, `unload_model`); the other workers follow at their next
poll through MNIST_MODEL_OVERRIDES_FILE (docs/lifecycle.md).
"""

from __future__ import annotations

import hmac
from typing import TypeVar

from flask import Blueprint, Response, request
from pydantic import BaseModel, ValidationError

from service.api import errors
from service.api.handler import current, json_response
from service.codecs.body import read_object
from service.errors import BadInput, Forbidden, Unauthorized
from service.types import repository as types
from service.types.tfserving import VersionStatus

bp = Blueprint("repository", __name__, url_prefix="/v2/repository")
errors.register_flat(bp)

EXTENSION = "model_repository"
B = TypeVar("B", bound=BaseModel)


@bp.before_request
def _admin_only() -> None:
    """No credentials: 401. Credentials while no token is set: 403 (the routes are off). A wrong one: 401."""
    token = current().settings.admin_token
    off = "" if token is not None else " (MNIST_ADMIN_TOKEN is not set on this server: the routes are off)"
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise Unauthorized(f"the model repository needs 'Authorization: Bearer <MNIST_ADMIN_TOKEN>'{off}")
    if token is None:
        raise Forbidden("the model repository is off: set MNIST_ADMIN_TOKEN to enable index, load and unload")
    if not hmac.compare_digest(given.strip().encode(), token.get_secret_value().encode()):
        raise Unauthorized("wrong admin token")


@bp.errorhandler(Unauthorized)
def _challenge(exc: Unauthorized) -> Response:
    response = errors.flat_shape(exc.status, exc.code, exc.message)
    response.headers["WWW-Authenticate"] = 'Bearer realm="model repository"'
    return response


@bp.post("/index")
def index() -> Response:
    """Every version on disk: READY (serving in this worker) or UNAVAILABLE with the reason."""
    asked = _body(types.IndexRequest)
    rows = [types.IndexEntry(**row) for row in current().models.index()]
    if asked.ready:
        rows = [row for row in rows if row.state == "READY"]
    return json_response(types.Index(root=rows).model_dump_json().encode())


@bp.post("/models/<name>/load")
def load(name: str) -> Response:
    """Serve `name` again, pinned to `parameters.versions` if given, else by its version policy."""
    asked = _body(types.LoadRequest)
    versions = asked.parameters.versions if asked.parameters else None
    rows = current().models.load_model(name, versions or None)
    answer = types.LoadAnswer(name=name, model_version_status=[VersionStatus(**row) for row in rows])
    return json_response(answer.model_dump_json().encode())


@bp.post("/models/<name>/unload")
def unload(name: str) -> Response:
    """Take `name` out of service in every worker until it is loaded again (not the default model)."""
    _body(types.UnloadRequest)
    current().models.unload_model(name)
    return json_response(types.UnloadAnswer(name=name, unloaded=True).model_dump_json().encode())


def _body(model: type[B]) -> B:
    """The optional JSON body: empty means the defaults."""
    raw = request.get_data(cache=False)
    if not raw.strip():
        return model()
    doc = read_object(raw, what="the request body", empty="")
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise BadInput(f"{where}: {first['msg']}") from None
