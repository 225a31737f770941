"""Closed-loop gRPC load for `make bench`: ModelInfer calls with N images, C in flight, for S seconds.

wrk speaks HTTP/1.1 only, so the gRPC rows get this generator (run as its own process, so its CPU is
counted apart from the server's). Each of the C streams has its own connection (a local subchannel pool),
as C independent clients would, so SO_REUSEPORT spreads them over the workers. Prints one JSON line with
wrk's field names (requests, http_errors, duration_us, p50_us ...), which scripts/bench.py reads.

    python scripts/grpc_load.py 127.0.0.1:8001 --model cnn --images 32 --concurrency 32 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import grpc
import numpy as np
from tritonclient.grpc import service_pb2


def requests_of(images: np.ndarray, model: str, per_request: int, count: int) -> list[bytes]:
    """`count` serialized ModelInferRequests of `per_request` UINT8 [n, 28, 28] MNIST test digits each."""
    out = []
    for i in range(count):
        start = (i * per_request) % (len(images) - per_request)
        batch = images[start : start + per_request]
        request = service_pb2.ModelInferRequest(
            model_name=model,
            inputs=[
                service_pb2.ModelInferRequest.InferInputTensor(
                    name="image", datatype="UINT8", shape=[per_request, 28, 28]
                )
            ],
            raw_input_contents=[batch.tobytes()],
        )
        out.append(request.SerializeToString())
    return out


def run(target: str, bodies: list[bytes], concurrency: int, seconds: float) -> dict[str, float]:
    """Keep `concurrency` calls in flight until `seconds` have passed; wrk-like summary."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    done = threading.Event()
    deadline = time.monotonic() + seconds
    live = [concurrency]
    channels = [
        grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(concurrency)
    ]
    calls = [
        channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=lambda raw: raw,
            response_deserializer=service_pb2.ModelInferResponse.FromString,
        )
        for channel in channels
    ]
    for channel in channels:
        grpc.channel_ready_future(channel).result(timeout=30)

    def start(stream: int, n: int) -> None:
        began = time.perf_counter()
        future = calls[stream].future(bodies[n % len(bodies)], timeout=30)
        future.add_done_callback(lambda f: finished(stream, n, began, f))

    def finished(stream: int, n: int, began: float, future: grpc.Future) -> None:
        elapsed = time.perf_counter() - began
        with lock:
            if future.exception() is None:
                latencies.append(elapsed)
            else:
                errors[0] += 1
        if time.monotonic() < deadline:
            start(stream, n + concurrency)
            return
        with lock:
            live[0] -= 1
            if live[0] == 0:
                done.set()

    began = time.perf_counter()
    for stream in range(concurrency):
        start(stream, stream)
    done.wait(seconds + 60)
    duration = time.perf_counter() - began
    for channel in channels:
        channel.close()
    values = np.array(latencies or [0.0]) * 1e6
    return {
        "requests": len(latencies) + errors[0],
        "http_errors": errors[0],
        "connect_errors": 0,
        "read_errors": 0,
        "write_errors": 0,
        "timeouts": 0,
        "duration_us": duration * 1e6,
        "p50_us": float(np.percentile(values, 50)),
        "p90_us": float(np.percentile(values, 90)),
        "p99_us": float(np.percentile(values, 99)),
        "max_us": float(values.max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="host:port of the gRPC listener")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--images", type=int, default=1, help="images per request")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--data", type=Path, required=True, help="uint8 [N, 28, 28] test digits (.npy)")
    args = parser.parse_args()
    images = np.load(args.data)
    bodies = requests_of(images, args.model, args.images, 50)
    print(json.dumps(run(args.target, bodies, args.concurrency, args.seconds)), flush=True)


if __name__ == "__main__":
    main()
