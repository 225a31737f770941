"""What the Open Inference Protocol says about the server and its models, for REST and gRPC alike.

Server and model metadata, the Triton model configuration (model_configuration extension) and the
statistics extension are built here once as plain data; service/api/v2.py answers them as JSON and
service/grpc/servicer.py parses the same dicts into the generated protobuf messages.
"""

from __future__ import annotations

from typing import Any

from service import __version__
from service.inference import ModelRegistry, ServedModel
from service.metrics import registry_for_scrape
from service.tensors import SIDE
from service.types import v2 as types
from service.types.ops import LoadFailure

SERVER_NAME = "mnist-service"
PLATFORM = "tflite"
# Exactly what both front ends serve (Triton's extension names).
# What both front ends serve; REST adds the model repository's load/unload (gRPC has only its index).
EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration", "parameters", "statistics"]
REST_EXTENSIONS = sorted([*EXTENSIONS, "model_repository"])


def server_metadata(extensions: list[str] = EXTENSIONS) -> types.ServerMetadata:
    return types.ServerMetadata(name=SERVER_NAME, version=__version__, extensions=extensions)


def model_metadata(
    model: ServedModel, versions: list[str] | None = None, failures: list[LoadFailure] | None = None
) -> types.ModelMetadata:
    """`versions`: the loaded ones, highest first (default: the one described); `failures`: refused ones."""
    return types.ModelMetadata(
        name=model.name,
        versions=versions or [model.version],
        failures=failures or [],
        platform=PLATFORM,
        inputs=[types.TensorMetadata(name=types.INPUT_NAME, datatype="FP32", shape=[-1, SIDE, SIDE])],
        outputs=[
            types.TensorMetadata(name="probabilities", datatype="FP32", shape=[-1, 10]),
            types.TensorMetadata(name="digit", datatype="INT64", shape=[-1]),
        ],
        parameters={"accuracy": model.accuracy},
    )


def model_config(model: ServedModel) -> dict[str, Any]:
    """Triton's model configuration (model_config.proto as JSON): what `image_client.py` reads first.

    Dims leave out the batch dimension (max_batch_size > 0); `digit` is one value per image, which Triton
    writes as dims [1] reshaped to a scalar. The dynamic batching settings are the micro-batcher's.
    """
    batcher = model.batcher
    return {
        "name": model.name,
        "platform": PLATFORM,
        "backend": PLATFORM,
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": batcher.max_batch_size,
        "input": [
            {
                "name": types.INPUT_NAME,
                "data_type": "TYPE_FP32",
                "format": "FORMAT_NONE",
                "dims": [SIDE, SIDE],
            }
        ],
        "output": [
            {"name": "probabilities", "data_type": "TYPE_FP32", "dims": [10], "label_filename": ""},
            {"name": "digit", "data_type": "TYPE_INT64", "dims": [1], "reshape": {"shape": []}},
        ],
        "dynamic_batching": {
            "preferred_batch_size": [batcher.max_batch_size],
            "max_queue_delay_microseconds": round(batcher.max_wait_s * 1_000_000),
        },
        "instance_group": [{"name": model.name, "kind": "KIND_CPU", "count": 1}],
        "parameters": {"accuracy": {"string_value": f"{model.accuracy:.4f}"}},
    }


def model_statistics(models: ModelRegistry, name: str | None, version: str | None) -> dict[str, Any]:
    """The statistics extension's answer, summed over every worker of this server.

    Derived from the Prometheus metrics, which the multiprocess directory already merges across gunicorn
    workers, so any worker (and either protocol) answers the same figures. Counts are requests except
    `inference_count` (images) and `execution_count` (model calls); durations are nanoseconds summed over
    requests, as Triton reports them. Decoding happens before the queue, inside `success` only, so
    compute_input and compute_output stay zero.
    """
    if name is None:
        chosen = [m for n in models.models for m in _by_version(models.versions(n))]
    elif version is None:  # every loaded version, as Triton answers; routing must not pick one at random
        models.get(name)  # UnknownModel for a name not served
        chosen = _by_version(models.versions(name))
    else:
        chosen = [models.get(name, version)]
    samples = _samples()
    stats = []
    for model in chosen:

        def value(metric: str, _model: ServedModel = model, **labels: str) -> float:
            """The metric summed over workers, for this model version only (as Triton reports them)."""
            labels.update(model=_model.name, version=_model.version)
            return sum(v for n, found, v in samples if n == metric and labels.items() <= found.items())

        ok = int(value("mnist_model_requests_total", outcome="success"))
        failed = int(value("mnist_model_requests_total", outcome="fail"))
        stats.append(
            {
                "name": model.name,
                "version": model.version,
                "last_inference": int(value("mnist_model_last_inference_timestamp_seconds") * 1000),
                "inference_count": int(value("mnist_batch_size_sum")),
                "execution_count": int(value("mnist_inference_duration_seconds_count")),
                "inference_stats": {
                    "success": _duration(ok, value("mnist_model_request_seconds_total", outcome="success")),
                    "fail": _duration(failed, value("mnist_model_request_seconds_total", outcome="fail")),
                    "queue": _duration(ok, value("mnist_model_queue_seconds_total")),
                    "compute_input": _duration(0, 0.0),
                    "compute_infer": _duration(ok, value("mnist_model_compute_seconds_total")),
                    "compute_output": _duration(0, 0.0),
                },
                "batch_stats": [],
            }
        )
    return {"model_stats": stats}


def _by_version(versions: dict[str, ServedModel]) -> list[ServedModel]:
    return [versions[v] for v in sorted(versions, key=int)]


def _duration(count: int, seconds: float) -> dict[str, int]:
    return {"count": count, "ns": round(seconds * 1e9)}


def _samples() -> list[tuple[str, dict[str, str], float]]:
    """Every sample of the merged registry: (name, labels, value)."""
    return [
        (sample.name, sample.labels, sample.value)
        for family in registry_for_scrape().collect()
        for sample in family.samples
    ]
