"""OpenTelemetry traces seen in a real Jaeger (v1.76.0 all-in-one, built by `make tools`).

Jaeger listens on loopback ports only; the service exports OTLP/gRPC to it; a few hundred requests over
REST and gRPC carry a caller's W3C traceparent; the traces are read back through Jaeger's query API.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.conftest import free_port, missing
from tests.support.wait import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]
JAEGER = Path(os.environ.get("JAEGER_BIN", Path.home() / ".cache/mnist-service/bin/jaeger-all-in-one"))
TIMEOUT = 30
HTTP_REQUESTS = 200
GRPC_REQUESTS = 100


@dataclass
class Jaeger:
    otlp: str  # host:port of the OTLP/gRPC receiver
    query: str  # base URL of the query API

    def traces(self, service: str) -> list[dict]:
        answer = requests.get(
            f"{self.query}/api/traces", params={"service": service, "limit": 2000}, timeout=TIMEOUT
        )
        answer.raise_for_status()
        return answer.json()["data"] or []

    def trace(self, trace_id: str) -> dict | None:
        answer = requests.get(f"{self.query}/api/traces/{trace_id}", timeout=TIMEOUT)
        if answer.status_code == 404:
            return None
        answer.raise_for_status()
        data = answer.json()["data"]
        return data[0] if data else None


@pytest.fixture(scope="module")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jaeger]:
    if not os.access(JAEGER, os.X_OK):
        missing("Jaeger all-in-one v1.76.0", f"run `scripts/install-tools.sh jaeger` (builds {JAEGER})")
    ports = {
        name: free_port() for name in ("otlp_grpc", "otlp_http", "query", "query_grpc", "admin", "zipkin")
    }
    ports |= {name: free_port() for name in ("collector_http", "collector_grpc")}
    args = [
        str(JAEGER),
        f"--collector.otlp.grpc.host-port=127.0.0.1:{ports['otlp_grpc']}",
        f"--collector.otlp.http.host-port=127.0.0.1:{ports['otlp_http']}",
        f"--collector.http-server.host-port=127.0.0.1:{ports['collector_http']}",
        f"--collector.grpc-server.host-port=127.0.0.1:{ports['collector_grpc']}",
        f"--query.http-server.host-port=127.0.0.1:{ports['query']}",
        f"--query.grpc-server.host-port=127.0.0.1:{ports['query_grpc']}",
        f"--admin.http.host-port=127.0.0.1:{ports['admin']}",
        "--memory.max-traces=20000",
    ]
    log = tmp_path_factory.mktemp("jaeger") / "jaeger.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    found = Jaeger(f"127.0.0.1:{ports['otlp_grpc']}", f"http://127.0.0.1:{ports['query']}")
    try:

        def up() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"jaeger exited with {proc.returncode}: {log.read_text()[-3000:]}")
            try:
                return requests.get(f"{found.query}/api/services", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(up, timeout=60, what="Jaeger's query API")
        yield found
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _traceparent() -> tuple[str, str, str]:
    """A caller's W3C traceparent: (header, trace id, parent span id)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def _spans_by_name(trace: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for span in trace["spans"]:
        out.setdefault(span["operationName"], []).append(span)
    return out


def _tags(span: dict) -> dict:
    return {tag["key"]: tag["value"] for tag in span["tags"]}


def test_traces_reach_jaeger_with_the_callers_parent(jaeger: Jaeger, server_factory) -> None:
    service = f"mnist-test-{secrets.token_hex(4)}"
    server = server_factory(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{jaeger.otlp}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_SERVICE_NAME": service,
            "OTEL_TRACES_SAMPLER": "always_on",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }
    )
    image = np.zeros((1, 784), np.float32)
    image[0, 300:320] = 1.0
    body = {
        "inputs": [{"name": "image", "shape": [1, 784], "datatype": "FP32", "data": image.ravel().tolist()}]
    }
    sent: list[tuple[str, str, str]] = []  # (protocol, trace id, parent span id)
    with requests.Session() as http:
        for _ in range(HTTP_REQUESTS):
            header, trace_id, parent = _traceparent()
            answer = http.post(
                f"{server.url}/v2/models/cnn/infer",
                json=body,
                headers={"traceparent": header},
                timeout=TIMEOUT,
            )
            assert answer.status_code == 200
            assert answer.headers["traceparent"].split("-")[1] == trace_id  # passed on, same trace
            sent.append(("http", trace_id, parent))
    request = service_pb2.ModelInferRequest(
        model_name="cnn",
        inputs=[
            service_pb2.ModelInferRequest.InferInputTensor(name="image", datatype="FP32", shape=[1, 784])
        ],
        raw_input_contents=[image.tobytes()],
    )
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(GRPC_REQUESTS):
            header, trace_id, parent = _traceparent()
            _, call = stub.ModelInfer.with_call(request, metadata=[("traceparent", header)], timeout=TIMEOUT)
            metadata = dict(call.initial_metadata())
            assert metadata["traceparent"].split("-")[1] == trace_id
            sent.append(("grpc", trace_id, parent))

    wait_until(
        lambda: len(jaeger.traces(service)) >= HTTP_REQUESTS + GRPC_REQUESTS,
        timeout=60,
        what=f"{HTTP_REQUESTS + GRPC_REQUESTS} request traces in Jaeger",
    )
    for protocol, trace_id, parent in sent[:: len(sent) // 20]:  # 20 requests spread over both protocols
        trace = wait_until(lambda t=trace_id: jaeger.trace(t), timeout=30, what=f"trace {trace_id}")
        spans = _spans_by_name(trace)
        root_name = (
            "POST /v2/models/<name>/infer"
            if protocol == "http"
            else "/inference.GRPCInferenceService/ModelInfer"
        )
        (root,) = spans[root_name]
        assert root["references"] == [{"refType": "CHILD_OF", "traceID": trace_id, "spanID": parent}]
        for child in ("decode", "queue wait", "batch inference"):
            (span,) = spans[child]
            assert span["references"][0]["spanID"] == root["spanID"], child
        assert _tags(spans["batch inference"][0])["batch.size"] >= 1

    # Store writes happen later, in their own traces, linked to the requests whose records they wrote.
    def store_writes() -> list[dict]:
        return [
            span
            for trace in jaeger.traces(service)
            for span in trace["spans"]
            if span["operationName"] == "store write"
        ]

    def linked() -> set[str]:
        return {
            ref["traceID"]
            for span in store_writes()
            for ref in span["references"]
            if ref["refType"] == "FOLLOWS_FROM"
        }

    ours = {trace_id for _, trace_id, _ in sent}
    try:
        wait_until(lambda: len(linked() & ours) >= len(ours) * 0.9, timeout=30, what="linked store writes")
    except AssertionError:
        writes = store_writes()
        pytest.fail(
            f"{len(linked() & ours)}/{len(ours)} requests linked; {len(writes)} store writes: {writes[:2]}"
        )

    # Tracing never costs a record: every request's prediction is in the store.
    def stored() -> int:
        with sqlite3.connect(server.db_path) as db:
            return int(db.execute("SELECT count(*) FROM predictions").fetchone()[0])

    wait_until(lambda: stored() >= len(sent), timeout=30, what=f"{len(sent)} stored records")
    # The trace id is in the access line of each request.
    logged = {
        json.loads(line).get("trace_id") for line in server.logs().splitlines() if line.startswith('{"')
    }
    assert ours <= logged


def test_cassandra_statements_are_spans_under_the_store_write(
    jaeger: Jaeger, server_factory, cassandra_node, cassandra_keyspace: str
) -> None:
    """opentelemetry-instrumentation-cassandra: the driver's statements appear as `Cassandra` client spans,
    children of the `store write` that issued them."""
    service = f"mnist-cass-{secrets.token_hex(4)}"
    server = server_factory(
        {
            "MNIST_STORE_URL": cassandra_node.store_url(cassandra_keyspace),
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{jaeger.otlp}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_SERVICE_NAME": service,
            "OTEL_TRACES_SAMPLER": "always_on",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        },
        workers=1,
    )
    body = {"inputs": [{"name": "image", "shape": [1, 784], "datatype": "FP32", "data": [0.5] * 784}]}
    for _ in range(20):
        answer = requests.post(f"{server.url}/v2/models/cnn/infer", json=body, timeout=TIMEOUT)
        assert answer.status_code == 200

    def cassandra_under_store_write() -> list[dict]:
        found = []
        for trace in jaeger.traces(service):
            writes = {s["spanID"] for s in trace["spans"] if s["operationName"] == "store write"}
            found += [
                s
                for s in trace["spans"]
                if s["operationName"] == "Cassandra"
                and any(ref["spanID"] in writes for ref in s["references"] if ref["refType"] == "CHILD_OF")
            ]
        return found

    spans = wait_until(cassandra_under_store_write, timeout=60, what="Cassandra spans under a store write")
    assert _tags(spans[0])["span.kind"] == "client"
