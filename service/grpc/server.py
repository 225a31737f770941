"""The gRPC server of one gunicorn worker, on the port every worker shares (SO_REUSEPORT).

Started by gunicorn's `post_worker_init` hook (service/gunicorn_conf.py) after the app, so it serves the
worker's own `ServiceState`: requests over gRPC share the micro-batcher with the REST ones of that worker,
and the kernel spreads connections over the workers as it does for the HTTP port. grpc is imported only
here, after the fork: its core threads must not exist in the arbiter.
"""

from __future__ import annotations

import logging
from concurrent import futures

import grpc
from tritonclient.grpc import service_pb2_grpc

from service.grpc.servicer import InferenceServicer
from service.settings import Settings
from service.state import ServiceState

log = logging.getLogger(__name__)


def start(state: ServiceState, settings: Settings) -> grpc.Server:
    """Bind MNIST_GRPC_PORT on MNIST_HOST and serve; raises when the port cannot be bound."""
    options = [
        ("grpc.so_reuseport", 1),
        # One message carries the whole request: the same cap as an HTTP body (RESOURCE_EXHAUSTED above).
        ("grpc.max_receive_message_length", settings.max_upload_bytes),
        ("grpc.max_send_message_length", -1),
    ]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix="grpc"),
        options=options,
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(state), server)
    address = f"{settings.host}:{settings.grpc_port}"
    if server.add_insecure_port(address) == 0:
        raise RuntimeError(f"cannot bind the gRPC port {address}")
    server.start()
    log.info("gRPC (Open Inference Protocol v2) on %s", address)
    return server


def stop(server: grpc.Server, grace_s: float) -> None:
    """Refuse new calls, let running ones finish within `grace_s`."""
    server.stop(grace_s).wait(grace_s + 1)
