"""The service's error types: raised deep, mapped to HTTP once (see service/api/errors.py)."""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: `code` is the machine-readable name, `status` the HTTP status it maps to."""

    code = "error"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInput(ServiceError):
    """The request is malformed: wrong JSON shape, type, NaN, out-of-range values."""

    code = "bad_input"
    status = 400


class BadImage(BadInput):
    """The bytes are not a decodable image, or the image holds no digit."""

    code = "bad_image"


class NoDigitFound(BadImage):
    """The image decodes but is blank: nothing to classify."""

    code = "no_digit_found"


class TooLarge(ServiceError):
    """The body or the decoded image exceeds the configured limits."""

    code = "too_large"
    status = 413


class UnknownModel(ServiceError):
    """The request names a model (or version) that is not served."""

    code = "unknown_model"
    status = 404


class NotFound(ServiceError):
    """The request names a record that does not exist."""

    code = "not_found"
    status = 404


class NotReady(ServiceError):
    """A model (or the server) cannot answer yet or any more: loading, or shutting down."""

    code = "not_ready"
    status = 503


class Overloaded(ServiceError):
    """This worker already holds as many inference requests as MNIST_MAX_INFLIGHT allows: the request is
    shed at once (503 with Retry-After, gRPC UNAVAILABLE) instead of queueing behind the others."""

    code = "overloaded"
    status = 503
    retry_after_s = 1  # whole seconds, as HTTP's Retry-After header carries them


class DeadlineExceeded(ServiceError):
    """The caller's deadline (X-Request-Timeout, the v2 `timeout` parameter, a gRPC deadline) passed before
    the model ran the request: the work is dropped, not run, and nothing is recorded."""

    code = "deadline_exceeded"
    status = 504

    def __init__(self, message: str, stage: str) -> None:
        super().__init__(message)
        self.stage = stage  # "arrival" (before the queue), "queued" (taken from it), "waiting" (in the model)


class ModelsUnavailable(ServiceError):
    """The model directory holds no servable model, or the default model is missing."""

    code = "models_unavailable"
    status = 503


class RepositoryConflict(ServiceError):
    """A model repository call that contradicts the configuration (unloading the default model, pinning a
    version that fails its checks)."""

    code = "repository_conflict"
    status = 409


class Unauthorized(ServiceError):
    """An admin route called without the admin token, or with a wrong one."""

    code = "unauthorized"
    status = 401


class Forbidden(ServiceError):
    """An admin route while no admin token is set: the routes are off."""

    code = "forbidden"
    status = 403


class StoreUnavailable(ServiceError):
    """The prediction store cannot answer reads right now (writes go to the spool instead)."""

    code = "store_unavailable"
    status = 503


class DataError(Exception):
    """An MNIST data file is missing or corrupt; the message names the file and how to get it."""
