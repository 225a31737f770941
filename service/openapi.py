"""The OpenAPI 3.1 document, generated: component schemas from the pydantic types (service/types/), the
model and version enums and the batch cap from the running service, and the paths from the URL map.

Each operation below says what only the handler knows (parameters, content types, status codes, links for
schemathesis' stateful phase); `spec` refuses to build when a served route has no operation here or an
operation no route, so the document cannot drift from the app.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from service import __version__
from service.types import errors, ops, own, records, repository, tfserving, v2

REF = "#/components/schemas/{model}"
MODEL_MARKER = "x-models"
EMPTY_OR_MODEL = "x-models-or-empty"

_COMPONENTS: tuple[type[BaseModel], ...] = (
    errors.Error,
    errors.FlatError,
    own.ImageItem,
    own.ImagesItem,
    own.PixelsItem,
    own.Prediction,
    own.ModelList,
    records.Record,
    records.Page,
    records.Feedback,
    records.FeedbackAnswer,
    tfserving.RowRequest,
    tfserving.ColumnRequest,
    tfserving.RowResponse,
    tfserving.ColumnResponse,
    tfserving.ModelStatus,
    tfserving.Metadata,
    v2.InferRequest,
    v2.InferResponse,
    v2.ServerMetadata,
    v2.ModelMetadata,
    v2.Live,
    v2.Ready,
    v2.ModelReady,
    v2.ModelConfig,
    v2.StatisticsResponse,
    ops.Health,
    ops.Readiness,
    repository.IndexRequest,
    repository.Index,
    repository.LoadRequest,
    repository.LoadAnswer,
    repository.UnloadRequest,
    repository.UnloadAnswer,
)
ADMIN = "adminToken"
SECURITY_SCHEMES = {
    ADMIN: {
        "type": "http",
        "scheme": "bearer",
        "description": "MNIST_ADMIN_TOKEN (none or a wrong one: 401; the setting unset: 403, routes off)",
    }
}


def ref(model: type[BaseModel] | str) -> dict[str, str]:
    return {"$ref": REF.format(model=model if isinstance(model, str) else model.__name__)}


def json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


@dataclass(frozen=True)
class Operation:
    tag: str
    summary: str
    operation_id: str
    ok: dict[str, Any]  # the 200 (or first success) response object
    errors: dict[int, str] = field(default_factory=dict)  # status -> description, in the blueprint's shape
    flat: bool = False  # errors are {"error": "..."}
    parameters: list[dict[str, Any]] = field(default_factory=list)
    body: dict[str, Any] | None = None  # content map of the request body (required when given)
    extra: dict[str, Any] = field(default_factory=dict)  # other responses (e.g. 503 with its own schema)
    links: dict[str, Any] = field(default_factory=dict)  # links of the 200 response
    security: list[dict[str, list[str]]] | None = None  # who may call it (the admin token)
    body_required: bool = True

    def render(self) -> dict[str, Any]:
        error_schema = ref(errors.FlatError if self.flat else errors.Error)
        responses: dict[str, Any] = {"200": {**self.ok, **({"links": self.links} if self.links else {})}}
        responses.update({str(s): json_body(error_schema, text) for s, text in sorted(self.errors.items())})
        responses.update(self.extra)
        operation: dict[str, Any] = {
            "tags": [self.tag],
            "summary": self.summary,
            "operationId": self.operation_id,
            "responses": responses,
        }
        if self.parameters:
            operation["parameters"] = self.parameters
        if self.body is not None:
            operation["requestBody"] = {"required": self.body_required, "content": self.body}
        if self.security is not None:
            operation["security"] = self.security
        return operation


def param(name: str, where: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "schema": schema,
        "description": description,
    }


_MODEL_ENUM = {MODEL_MARKER: True}
NAME = param("name", "path", {"type": "string", **_MODEL_ENUM}, "A served model")
VERSION = param("version", "path", {"type": "string", "x-versions": True}, "The served version (an integer)")
RECORD = param("record_id", "path", {"type": "string", "format": "uuid"}, "A prediction's id")
_ID_LINKS = {
    "GetPrediction": {"operationId": "getPrediction", "parameters": {"record_id": "$response.body#/id"}},
    "GetPredictionImage": {
        "operationId": "getPredictionImage",
        "parameters": {"record_id": "$response.body#/id"},
    },
    "GiveFeedback": {"operationId": "giveFeedback", "parameters": {"record_id": "$response.body#/id"}},
}
_PAGE_LINKS = {
    name: {**link, "parameters": {"record_id": "$response.body#/predictions/0/id"}}
    for name, link in _ID_LINKS.items()
}
_BINARY = {"type": "string", "format": "binary"}
TIMEOUT = param(
    "X-Request-Timeout",
    "header",
    {"type": "number", "exclusiveMinimum": 0, "maximum": 86400},
    "Seconds the caller waits (a decimal number, e.g. 0.5); a request still waiting for the model then is "
    "dropped unrun and answered 504",
)
# Every inference operation: shed when the worker is full (503 + Retry-After), or past the caller's deadline.
_DEADLINE = "The caller's deadline (X-Request-Timeout, v2 timeout) passed before the model ran the request"


def _shed(flat: bool) -> dict[str, Any]:
    """The 503 of admission control, with its Retry-After header."""
    answer = json_body(
        ref(errors.FlatError if flat else errors.Error),
        "Overloaded (the worker holds MNIST_MAX_INFLIGHT requests already): shed at once, retry later",
    )
    answer["headers"] = {
        "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}
    }
    return {"503": answer}


# contentMediaType: OpenAPI 3.1's spelling of a file part (sent with a filename) in multipart bodies.
_DIGIT_FILE = {
    "type": "string",
    "format": own.DIGIT_IMAGE,
    "contentMediaType": "application/octet-stream",
    "description": "An image file holding one digit",
}
_IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/bmp", "image/tiff", "image/webp")


def _records_cursor() -> str:
    """The pattern the handler checks (service/types/records.py), in ECMA spelling (no group names)."""
    # An empty `before` means "from the newest", as an absent one does.
    return "^(?:" + re.sub(r"\?P<\w+>", "", records.CURSOR)[1:-1] + ")?$"


def _own_operations() -> dict[tuple[str, str], Operation]:
    predict_json = {
        "anyOf": [
            ref(own.ImageItem),
            ref(own.ImagesItem),
            ref(own.PixelsItem),
            {
                "type": "array",
                "items": {"anyOf": [ref(own.ImageItem), ref(own.ImagesItem), ref(own.PixelsItem)]},
                "minItems": 1,
                "x-batch": True,
                "description": "several items; the answer is a list",
            },
        ]
    }
    form = {
        "type": "object",
        "properties": {
            # One file per part; repeat the part for several images (the answer is then a list).
            "image": {**_DIGIT_FILE, "description": "An image file holding one digit; repeat for several"},
            "file": {
                **_DIGIT_FILE,
                "description": "An image file holding one digit (older clients' field name)",
            },
            "model": {"type": "string", EMPTY_OR_MODEL: True},
        },
        "anyOf": [{"required": ["image"]}, {"required": ["file"]}],
    }
    image_body = {t: {"schema": _DIGIT_FILE} for t in _IMAGE_TYPES}
    return {
        ("/predict", "post"): Operation(
            "Predict",
            "Classify one or several images: multipart upload, raw image body, or JSON (base64 or pixels)",
            "predict",
            json_body(
                {"anyOf": [ref(own.Prediction), {"type": "array", "items": ref(own.Prediction)}]},
                "One result, or a list when several images (or a list) were sent",
            ),
            {
                400: "Bad input: not an image, no digit in it, wrong JSON, a bad X-Request-Timeout",
                404: "Unknown model or version",
                413: "Too large",
                504: _DEADLINE,
            },
            parameters=[
                param(
                    "model", "query", {"type": "string", EMPTY_OR_MODEL: True}, "Model (empty: the default)"
                ),
                param(
                    "version",
                    "query",
                    {"type": "string", "x-versions": True},
                    "A loaded version of the model (absent: canary weights, else the highest)",
                ),
                param(
                    "include_input",
                    "query",
                    {"type": "string"},
                    "1, true, yes or on (any case): add the 28x28 input to each result",
                ),
                TIMEOUT,
            ],
            extra=_shed(flat=False),
            body={
                "multipart/form-data": {"schema": form},
                "application/json": {"schema": predict_json},
                **image_body,
            },
            links=_ID_LINKS,
        ),
        ("/api/models", "get"): Operation(
            "Predict",
            "Served models with version and accuracy",
            "listModels",
            json_body(ref(own.ModelList), "OK"),
        ),
        ("/api/predictions", "get"): Operation(
            "History",
            "Recorded predictions, newest first",
            "listPredictions",
            json_body(ref(records.Page), "OK"),
            {400: "Bad query"},
            parameters=[
                param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 500}, "Page size (50)"),
                param(
                    "before",
                    "query",
                    {"type": "string", "pattern": _records_cursor()},
                    "A next_before cursor, or a time (no offset: UTC)",
                ),
                param("digit", "query", {"type": "integer", "minimum": 0, "maximum": 9}, "Predicted digit"),
                param("model", "query", {"type": "string"}, "Model name"),
                param(
                    "shadow",
                    "query",
                    {"type": "string"},
                    "1, true, yes or on (any case): include shadow records (answers never returned)",
                ),
            ],
            links=_PAGE_LINKS,
        ),
        ("/api/predictions/{record_id}", "get"): Operation(
            "History",
            "One record with its 28x28 input and original image",
            "getPrediction",
            json_body(ref(records.Record), "OK"),
            {404: "No such record"},
            parameters=[RECORD],
        ),
        ("/api/predictions/{record_id}/image", "get"): Operation(
            "History",
            "The original upload, as sent",
            "getPredictionImage",
            {
                "description": "The image (its detected type)",
                "content": {t: {"schema": _BINARY} for t in (*_IMAGE_TYPES, "application/octet-stream")},
            },
            {404: "No such record, or its image was not kept"},
            parameters=[RECORD],
        ),
        ("/api/predictions/{record_id}/feedback", "post"): Operation(
            "Feedback",
            "Store the true digit",
            "giveFeedback",
            json_body(ref(records.FeedbackAnswer), "Stored"),
            {400: "Not a digit", 404: "No such record"},
            parameters=[RECORD],
            body={"application/json": {"schema": ref(records.Feedback)}},
        ),
        ("/api/feedback/export", "get"): Operation(
            "Feedback",
            "Labelled examples for retraining",
            "exportFeedback",
            {
                "description": "NPZ (images, labels, predicted, ids, models) or CSV (Kaggle's pixel0..783)",
                "content": {
                    "application/octet-stream": {"schema": _BINARY},
                    "text/csv": {"schema": {"type": "string"}},
                },
            },
            {400: "Unknown format"},
            parameters=[
                param("format", "query", {"type": "string", "enum": ["npz", "csv"]}, "File format (npz)")
            ],
        ),
    }


def _tf_operations() -> dict[tuple[str, str], Operation]:
    found: dict[tuple[str, str], Operation] = {}
    for suffix, params, tail in (("", [NAME], ""), ("/versions/{version}", [NAME, VERSION], "Version")):
        base = f"/v1/models/{{name}}{suffix}"
        found[(base, "get")] = Operation(
            "TF Serving",
            "Model version status",
            f"tfModelStatus{tail}",
            json_body(ref(tfserving.ModelStatus), "OK"),
            {404: "Unknown model or version", 405: "A ':' in the last name starts a method (POST only)"},
            flat=True,
            parameters=params,
        )
        found[(f"{base}/metadata", "get")] = Operation(
            "TF Serving",
            "Signature metadata",
            f"tfModelMetadata{tail}",
            json_body(ref(tfserving.Metadata), "OK"),
            {404: "Unknown model or version"},
            flat=True,
            parameters=params,
        )
        found[(f"{base}:predict", "post")] = Operation(
            "TF Serving",
            "Predict: row 'instances' or columnar 'inputs'",
            f"tfPredict{tail}",
            json_body(
                {"anyOf": [ref(tfserving.RowResponse), ref(tfserving.ColumnResponse)]},
                "predictions (row request) or outputs (columnar request), 10 probabilities per image",
            ),
            {400: "Bad input", 404: "Unknown model or version", 413: "Too large", 504: _DEADLINE},
            flat=True,
            parameters=[*params, TIMEOUT],
            extra=_shed(flat=True),
            body={
                "application/json": {
                    "schema": {"anyOf": [ref(tfserving.RowRequest), ref(tfserving.ColumnRequest)]}
                }
            },
        )
    return found


def _v2_operations() -> dict[tuple[str, str], Operation]:
    tag = "Open Inference Protocol v2"
    found: dict[tuple[str, str], Operation] = {
        ("/v2", "get"): Operation(
            tag, "Server metadata", "v2ServerMetadata", json_body(ref(v2.ServerMetadata), "OK")
        ),
        ("/v2/health/live", "get"): Operation(tag, "Liveness", "v2Live", json_body(ref(v2.Live), "OK")),
        ("/v2/models/stats", "get"): Operation(
            tag,
            "Statistics of every model, summed over every worker",
            "v2Statistics",
            json_body(ref(v2.StatisticsResponse), "OK"),
        ),
        ("/v2/health/ready", "get"): Operation(
            tag, "Readiness", "v2Ready", json_body(ref(v2.Ready), "OK"), {503: "Not ready"}, flat=True
        ),
    }
    header = param(
        "Inference-Header-Content-Length",
        "header",
        {"type": "integer", "minimum": 1},
        "Length of the JSON header when binary tensor data follows it",
    )
    for suffix, params, tail in (("", [NAME], ""), ("/versions/{version}", [NAME, VERSION], "Version")):
        base = f"/v2/models/{{name}}{suffix}"
        found[(base, "get")] = Operation(
            tag,
            "Model metadata",
            f"v2ModelMetadata{tail}",
            json_body(ref(v2.ModelMetadata), "OK"),
            {404: "Unknown model or version"},
            flat=True,
            parameters=params,
        )
        found[(f"{base}/ready", "get")] = Operation(
            tag,
            "Model readiness",
            f"v2ModelReady{tail}",
            json_body(ref(v2.ModelReady), "OK"),
            {404: "Unknown model or version", 503: "Not ready"},
            flat=True,
            parameters=params,
        )
        found[(f"{base}/config", "get")] = Operation(
            tag,
            "Model configuration (Triton's model_config as JSON)",
            f"v2ModelConfig{tail}",
            json_body(ref(v2.ModelConfig), "OK"),
            {404: "Unknown model or version"},
            flat=True,
            parameters=params,
        )
        found[(f"{base}/stats", "get")] = Operation(
            tag,
            "Model statistics, summed over every worker",
            f"v2ModelStatistics{tail}",
            json_body(ref(v2.StatisticsResponse), "OK"),
            {404: "Unknown model or version"},
            flat=True,
            parameters=params,
        )
        found[(f"{base}/infer", "post")] = Operation(
            tag,
            "Inference: FP32/FP64/FP16/UINT8/INT64 [N,784], [N,28,28] or [N,28,28,1] -> probabilities, digit",
            f"v2Infer{tail}",
            {
                "description": "JSON outputs, or binary ones after the JSON header",
                "content": {
                    "application/json": {"schema": ref(v2.InferResponse)},
                    "application/octet-stream": {"schema": _BINARY},
                },
            },
            {400: "Bad input", 404: "Unknown model or version", 413: "Too large", 504: _DEADLINE},
            flat=True,
            parameters=[*params, header, TIMEOUT],
            extra=_shed(flat=True),
            body={
                "application/json": {"schema": ref(v2.InferRequest)},
                "application/octet-stream": {
                    "schema": _BINARY,
                    "description": "binary tensor data extension: JSON header, then the raw tensor",
                },
            },
        )
    return found


def _repository_operations() -> dict[tuple[str, str], Operation]:
    tag = "Model repository (v2 extension)"
    guarded = {
        401: "No 'Authorization: Bearer <token>', or a wrong token",
        403: "The model repository is off (MNIST_ADMIN_TOKEN is unset)",
    }

    def optional(model: type[BaseModel]) -> dict[str, Any]:
        return {"application/json": {"schema": ref(model)}}

    def op(summary: str, operation_id: str, ok: dict[str, Any], more: dict[int, str], **kw: Any) -> Operation:
        errors = {400: "Bad body", **guarded, **more}
        return Operation(
            tag,
            summary,
            operation_id,
            ok,
            errors,
            flat=True,
            security=[{ADMIN: []}],
            body_required=False,
            **kw,
        )

    model = param("name", "path", {"type": "string"}, "A model in the model directory")
    found = {
        ("/v2/repository/index", "post"): op(
            "Every model version on disk, READY or UNAVAILABLE with the reason",
            "v2RepositoryIndex",
            json_body(ref(repository.Index), "OK"),
            {},
            body=optional(repository.IndexRequest),
        ),
        ("/v2/repository/models/{name}/load", "post"): op(
            "Serve a model again, optionally pinned to versions (every worker by its next poll)",
            "v2RepositoryLoad",
            json_body(ref(repository.LoadAnswer), "Loaded; this worker's version status"),
            {404: "No such model or version on disk", 409: "A version asked for fails its checks"},
            parameters=[model],
            body=optional(repository.LoadRequest),
        ),
        ("/v2/repository/models/{name}/unload", "post"): op(
            "Take a model out of service (not the default model)",
            "v2RepositoryUnload",
            json_body(ref(repository.UnloadAnswer), "Unloaded"),
            {404: "No such model", 409: "The default model stays loaded"},
            parameters=[model],
            body=optional(repository.UnloadRequest),
        ),
    }
    return found


def _ops_operations() -> dict[tuple[str, str], Operation]:
    html = {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}
    return {
        ("/healthz", "get"): Operation("Ops", "Liveness", "healthz", json_body(ref(ops.Health), "OK")),
        ("/readyz", "get"): Operation(
            "Ops",
            "Readiness: models loaded, store writable",
            "readyz",
            json_body(ref(ops.Readiness), "Ready"),
            extra={"503": json_body(ref(ops.Readiness), "Not ready (the detail says which part)")},
        ),
        ("/metrics", "get"): Operation(
            "Ops",
            "Prometheus metrics (all workers)",
            "metrics",
            {
                "description": "Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
        ),
        ("/openapi.json", "get"): Operation(
            "Ops", "This document", "openapi", json_body({"type": "object"}, "OpenAPI 3.1")
        ),
        ("/", "get"): Operation("Web", "Drawing page", "drawPage", html),
        ("/history", "get"): Operation("Web", "History page", "historyPage", html),
    }


def operations() -> dict[tuple[str, str], Operation]:
    return {
        **_own_operations(),
        **_tf_operations(),
        **_v2_operations(),
        **_repository_operations(),
        **_ops_operations(),
    }


def path_of(rule: str) -> str:
    """A werkzeug rule ("/v1/models/<model:name>") in OpenAPI spelling ("/v1/models/{name}")."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def components(models: list[str], versions: list[str], max_images: int) -> dict[str, Any]:
    _, top = models_json_schema([(m, "validation") for m in _COMPONENTS], ref_template=REF)
    schemas: dict[str, Any] = top["$defs"]
    return {name: _fill(schema, models, versions, max_images) for name, schema in schemas.items()}


def _fill(node: Any, models: list[str], versions: list[str], max_images: int) -> Any:
    """Put the live values where the types left markers: model and version enums, the batch cap."""
    if isinstance(node, list):
        return [_fill(item, models, versions, max_images) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _fill(value, models, versions, max_images) for key, value in node.items()}
    if out.pop(MODEL_MARKER, False):
        out["enum"] = models
    if out.pop(EMPTY_OR_MODEL, False):  # the own API reads an empty model name as "the default model"
        out["enum"] = [*models, ""]
    if out.pop("x-versions", False):
        out["enum"] = versions
    if out.pop("x-batch", False):
        out["maxItems"] = max_images
    if out.pop("x-batch-dim", False):
        out["maximum"] = max_images
    return out


def spec(
    models: list[str], versions: list[str], max_images: int, routes: dict[str, set[str]]
) -> dict[str, Any]:
    """The whole document for a service serving `models` at `versions`, with the app's `routes`."""
    wanted = operations()
    # TF Serving's `:classify`/`:regress` answer "unsupported"; they are not part of the documented API.
    served = {
        (path, method) for path, methods in routes.items() if ":{verb}" not in path for method in methods
    }
    if served != set(wanted):
        raise RuntimeError(
            f"OpenAPI operations and routes differ: undocumented {sorted(served - set(wanted))}, "
            f"not served {sorted(set(wanted) - served)}"
        )
    paths: dict[str, Any] = {}
    for (path, method), operation in wanted.items():
        paths.setdefault(path, {})[method] = operation.render()
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "mnist-service",
            "version": __version__,
            "description": "Handwritten digit recognition: own JSON API, TensorFlow Serving REST API and "
            "Open Inference Protocol v2. Own API errors are {error: {code, message}}; /v1 and /v2 errors "
            "are {error: message}. A request carries at most " + str(max_images) + " images "
            "(MNIST_MAX_IMAGES_PER_REQUEST). An image file must decode and hold a digit, and a v2 tensor's "
            "data must hold prod(shape) values: JSON Schema cannot say either, so such requests are 400s.",
        },
        "paths": _fill(paths, models, versions, max_images),
        "components": {
            "schemas": components(models, versions, max_images),
            "securitySchemes": SECURITY_SCHEMES,
        },
    }
    return document
