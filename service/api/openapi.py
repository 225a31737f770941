"""GET /openapi.json: an OpenAPI 3.1 description of every endpoint.

Written as data rather than generated from docstrings: the three protocols have fixed, documented shapes, and
a test checks that every route the app serves is described here (and nothing else).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from service import __version__

bp = Blueprint("openapi", __name__)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int, flat: bool = False) -> dict[str, Any]:
    schema = _ref("FlatError" if flat else "Error")
    text = {
        400: "Bad input",
        404: "Unknown model or record",
        413: "Too large",
        503: "Not ready",
    }
    return {str(s): _json(schema, text[s]) for s in statuses}


def _param(name: str, where: str, schema: dict[str, Any], description: str, required: bool = False) -> dict:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "schema": schema,
        "description": description,
    }


_MODEL = _param("name", "path", {"type": "string", "enum": ["softmax", "cnn"]}, "Model name")
_VERSION = _param("version", "path", {"type": "string"}, "Model version (integer, as served)")
_ID = _param("record_id", "path", {"type": "string", "format": "uuid"}, "Prediction id")

_PIXELS = {
    "description": "One image: 28x28, 28x28x1 or 784 numbers, 0..1 or 0..255 (white ink on black)",
    "type": "array",
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    },
    "FlatError": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "Prediction": {
        "type": "object",
        "required": ["id", "model", "version", "digit", "confidence", "probabilities", "latency_ms"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "model": {"type": "string"},
            "version": {"type": "string"},
            "digit": {"type": "integer", "minimum": 0, "maximum": 9},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "probabilities": {"type": "array", "items": {"type": "number"}, "minItems": 10, "maxItems": 10},
            "latency_ms": {"type": "number", "minimum": 0},
            "input": {"type": "array", "description": "28x28 floats 0..1 the model saw (include_input=1)"},
        },
    },
    "PredictJson": {
        "oneOf": [
            {
                "type": "object",
                "properties": {
                    "image": {
                        "oneOf": [
                            {"type": "string", "description": "base64 image (or a data: URL)"},
                            {"type": "array", "items": {"type": "string"}},
                        ]
                    },
                    "model": {"type": "string"},
                },
                "required": ["image"],
            },
            {
                "type": "object",
                "properties": {"pixels": _PIXELS, "model": {"type": "string"}},
                "required": ["pixels"],
            },
            {"type": "array", "items": {"type": "object"}, "description": "several of the above"},
        ]
    },
    "Record": {
        "type": "object",
        "required": ["id", "created", "model", "version", "digit", "confidence", "probabilities", "label"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "created": {"type": "string", "format": "date-time"},
            "model": {"type": "string"},
            "version": {"type": "string"},
            "digit": {"type": "integer"},
            "confidence": {"type": "number"},
            "probabilities": {"type": "array", "items": {"type": "number"}},
            "latency_ms": {"type": "number"},
            "label": {"type": ["integer", "null"]},
            "pixels": {"type": "array", "description": "the normalized 28x28 input, floats 0..1"},
            "image_url": {"type": ["string", "null"]},
            "image": {"type": ["string", "null"], "description": "original upload, base64 (detail only)"},
            "image_type": {"type": ["string", "null"]},
        },
    },
    "Page": {
        "type": "object",
        "required": ["predictions", "next_before"],
        "properties": {
            "predictions": {"type": "array", "items": _ref("Record")},
            "next_before": {"type": ["string", "null"], "description": "cursor for the next (older) page"},
        },
    },
    "Model": {
        "type": "object",
        "required": ["name", "version", "accuracy"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "accuracy": {"type": "number"},
            "default": {"type": "boolean"},
        },
    },
    "TFPredictRequest": {
        "type": "object",
        "properties": {
            "signature_name": {"type": "string"},
            "instances": {"type": "array", "items": _PIXELS},
            "inputs": {"type": "array", "description": "columnar form: [N, ...] images"},
        },
    },
    "TFPredictResponse": {
        "type": "object",
        "properties": {
            "predictions": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
            "outputs": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
        },
    },
    "V2Tensor": {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "datatype": {"type": "string", "enum": ["FP32", "FP64", "UINT8", "INT64"]},
            "parameters": {"type": "object"},
            "data": {"type": "array"},
        },
    },
    "V2InferRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "inputs": {"type": "array", "items": _ref("V2Tensor"), "minItems": 1, "maxItems": 1},
            "outputs": {"type": "array", "items": {"type": "object"}},
        },
    },
    "V2InferResponse": {
        "type": "object",
        "required": ["model_name", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "outputs": {"type": "array", "items": _ref("V2Tensor")},
        },
    },
}

_OBJECT = {"type": "object"}


def _tf_paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for suffix, params in (("", [_MODEL]), ("/versions/{version}", [_MODEL, _VERSION])):
        base = f"/v1/models/{{name}}{suffix}"
        paths[base] = {
            "get": {
                "tags": ["TF Serving"],
                "summary": "Model version status",
                "parameters": params,
                "responses": {"200": _json(_OBJECT), **_errors(404, flat=True)},
            }
        }
        paths[f"{base}/metadata"] = {
            "get": {
                "tags": ["TF Serving"],
                "summary": "Signature metadata",
                "parameters": params,
                "responses": {"200": _json(_OBJECT), **_errors(404, flat=True)},
            }
        }
        paths[f"{base}:predict"] = {
            "post": {
                "tags": ["TF Serving"],
                "summary": "Predict (row 'instances' or columnar 'inputs')",
                "parameters": params,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("TFPredictRequest")}},
                },
                "responses": {"200": _json(_ref("TFPredictResponse")), **_errors(400, 404, 413, flat=True)},
            }
        }
    return paths


def _v2_paths() -> dict[str, Any]:
    ok = {"200": _json(_OBJECT)}
    paths: dict[str, Any] = {
        "/v2": {
            "get": {"tags": ["Open Inference Protocol v2"], "summary": "Server metadata", "responses": ok}
        },
        "/v2/health/live": {
            "get": {"tags": ["Open Inference Protocol v2"], "summary": "Liveness", "responses": ok}
        },
        "/v2/health/ready": {
            "get": {
                "tags": ["Open Inference Protocol v2"],
                "summary": "Readiness",
                "responses": {**ok, **_errors(503, flat=True)},
            }
        },
    }
    for suffix, params in (("", [_MODEL]), ("/versions/{version}", [_MODEL, _VERSION])):
        base = f"/v2/models/{{name}}{suffix}"
        paths[base] = {
            "get": {
                "tags": ["Open Inference Protocol v2"],
                "summary": "Model metadata",
                "parameters": params,
                "responses": {**ok, **_errors(404, flat=True)},
            }
        }
        paths[f"{base}/ready"] = {
            "get": {
                "tags": ["Open Inference Protocol v2"],
                "summary": "Model readiness",
                "parameters": params,
                "responses": {**ok, **_errors(404, 503, flat=True)},
            }
        }
        paths[f"{base}/infer"] = {
            "post": {
                "tags": ["Open Inference Protocol v2"],
                "summary": "Inference: FP32/UINT8 [N,784], [N,28,28] or [N,28,28,1] -> probabilities, digit",
                "parameters": params,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": _ref("V2InferRequest")},
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"},
                            "description": "binary tensor data extension (Inference-Header-Content-Length)",
                        },
                    },
                },
                "responses": {"200": _json(_ref("V2InferResponse")), **_errors(400, 404, 413, flat=True)},
            }
        }
    return paths


def _own_paths() -> dict[str, Any]:
    return {
        "/predict": {
            "post": {
                "tags": ["Predict"],
                "summary": "Classify one or several images",
                "parameters": [
                    _param("model", "query", {"type": "string"}, "Model name (default: the configured one)"),
                    _param(
                        "include_input", "query", {"type": "boolean"}, "Add the 28x28 input to each result"
                    ),
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "image": {
                                        "type": "array",
                                        "items": {"type": "string", "format": "binary"},
                                    },
                                    "file": {
                                        "type": "string",
                                        "format": "binary",
                                        "description": "older clients",
                                    },
                                    "model": {"type": "string"},
                                },
                            }
                        },
                        "application/json": {"schema": _ref("PredictJson")},
                        "image/*": {"schema": {"type": "string", "format": "binary"}},
                    },
                },
                "responses": {
                    "200": _json(
                        {"oneOf": [_ref("Prediction"), {"type": "array", "items": _ref("Prediction")}]},
                        "One result, or a list when several images were sent",
                    ),
                    **_errors(400, 404, 413),
                },
            }
        },
        "/api/models": {
            "get": {
                "tags": ["Predict"],
                "summary": "Served models with version and accuracy",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "models": {"type": "array", "items": _ref("Model")},
                                "default": {"type": "string"},
                            },
                        }
                    )
                },
            }
        },
        "/api/predictions": {
            "get": {
                "tags": ["History"],
                "summary": "Recorded predictions, newest first",
                "parameters": [
                    _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 500}, "Page size"),
                    _param("before", "query", {"type": "string"}, "next_before cursor or ISO 8601 time"),
                    _param(
                        "digit", "query", {"type": "integer", "minimum": 0, "maximum": 9}, "Predicted digit"
                    ),
                    _param("model", "query", {"type": "string"}, "Model name"),
                ],
                "responses": {"200": _json(_ref("Page")), **_errors(400)},
            }
        },
        "/api/predictions/{record_id}": {
            "get": {
                "tags": ["History"],
                "summary": "One record with its 28x28 input and original image",
                "parameters": [_ID],
                "responses": {"200": _json(_ref("Record")), **_errors(404)},
            }
        },
        "/api/predictions/{record_id}/image": {
            "get": {
                "tags": ["History"],
                "summary": "The original upload",
                "parameters": [_ID],
                "responses": {
                    "200": {
                        "description": "the image",
                        "content": {"image/*": {"schema": {"type": "string", "format": "binary"}}},
                    },
                    **_errors(404),
                },
            }
        },
        "/api/predictions/{record_id}/feedback": {
            "post": {
                "tags": ["Feedback"],
                "summary": "Store the true digit",
                "parameters": [_ID],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["label"],
                                "properties": {"label": {"type": "integer", "minimum": 0, "maximum": 9}},
                            }
                        }
                    },
                },
                "responses": {"200": _json(_OBJECT), **_errors(400, 404)},
            }
        },
        "/api/feedback/export": {
            "get": {
                "tags": ["Feedback"],
                "summary": "Labelled examples for retraining",
                "parameters": [
                    _param("format", "query", {"type": "string", "enum": ["npz", "csv"]}, "File format")
                ],
                "responses": {
                    "200": {
                        "description": "NPZ (images, labels, predicted, ids, models) or CSV (pixel0..783)",
                        "content": {"application/octet-stream": {}, "text/csv": {}},
                    },
                    **_errors(400),
                },
            }
        },
    }


def _ops_paths() -> dict[str, Any]:
    return {
        "/healthz": {"get": {"tags": ["Ops"], "summary": "Liveness", "responses": {"200": _json(_OBJECT)}}},
        "/readyz": {
            "get": {
                "tags": ["Ops"],
                "summary": "Readiness: models loaded, store writable",
                "responses": {"200": _json(_OBJECT), "503": _json(_OBJECT, "Not ready")},
            }
        },
        "/metrics": {
            "get": {
                "tags": ["Ops"],
                "summary": "Prometheus metrics (all workers)",
                "responses": {
                    "200": {"description": "text exposition format", "content": {"text/plain": {}}}
                },
            }
        },
        "/openapi.json": {
            "get": {"tags": ["Ops"], "summary": "This document", "responses": {"200": _json(_OBJECT)}}
        },
        "/": {
            "get": {"tags": ["Web"], "summary": "Drawing page", "responses": {"200": {"description": "HTML"}}}
        },
        "/history": {
            "get": {"tags": ["Web"], "summary": "History page", "responses": {"200": {"description": "HTML"}}}
        },
    }


def spec() -> dict[str, Any]:
    """The whole document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mnist-service",
            "version": __version__,
            "description": "Handwritten digit recognition: own JSON API, TensorFlow Serving REST API and "
            "Open Inference Protocol v2. Own API errors are {error: {code, message}}; /v1 and /v2 errors are "
            "{error: message}.",
        },
        "paths": {**_own_paths(), **_tf_paths(), **_v2_paths(), **_ops_paths()},
        "components": {"schemas": SCHEMAS},
    }


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(spec())
