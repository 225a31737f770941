"""`make bench`: load-test the real server with wrk and write BENCHMARKS.md.

Starts `mnist serve` (gunicorn, SQLite store in a temporary folder), drives it from wrk (a separate process,
scripts/bench.lua) posting MNIST test digits as PNG uploads at several concurrencies per model, single digits
as v2 and TF Serving JSON tensors and as a raw PNG body, then 32 digits per request to the TF Serving and Open
Inference Protocol v2 APIs, and compares with the same model's
in-process batched throughput (the ceiling). Also measures the store's write path and
the server's resident memory, and checks that every answered prediction was recorded after SIGTERM.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts import bench_overload  # noqa: E402
from service.artifacts import latest  # noqa: E402
from service.data import load_mnist  # noqa: E402
from service.runtime import TFLiteModel  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.store.base import PredictionRecord  # noqa: E402
from service.store.queue import WriteQueue  # noqa: E402
from service.store.sqlite import SqliteStore  # noqa: E402

LUA = ROOT / "scripts" / "bench.lua"
GRPC_LOAD = ROOT / "scripts" / "grpc_load.py"
TARGET_P50_MS = 5.0
TARGET_CNN_RPS_AT_32 = 1000.0
TARGET_RATIO = 0.5
BATCH = 32  # images per request in the batched-request runs
# v2 binary tensor data extension: this JSON header, then the raw UINT8 [BATCH, 28, 28] pixels.
V2_HEADER = json.dumps(
    {
        "inputs": [
            {
                "name": "image",
                "datatype": "UINT8",
                "shape": [BATCH, 28, 28],
                "parameters": {"binary_data_size": BATCH * 28 * 28},
            }
        ]
    },
    separators=(",", ":"),
).encode()
# Batched-request APIs: name -> (request path for a model, headers); the bodies are written by write_bodies.
BATCHED_APIS = {
    "TF Serving JSON": ("/v1/models/{model}:predict", ("Content-Type: application/json",)),
    "v2 binary UINT8": (
        "/v2/models/{model}/infer",
        (
            "Content-Type: application/octet-stream",
            f"Inference-Header-Content-Length: {len(V2_HEADER)}",
        ),
    ),
}
PROFILE_AT = 32  # concurrency of the profiled runs (last model)
# Single-image requests in the other forms clients send: name -> (request path for a model, headers); the
# bodies are written by write_single_bodies. The PNG multipart upload is the main table's row.
SINGLE_APIS = {
    "v2 JSON FP32": ("/v2/models/{model}/infer", ("Content-Type: application/json",)),
    "TF Serving JSON": ("/v1/models/{model}:predict", ("Content-Type: application/json",)),
    "/predict raw PNG body": ("/predict?model={model}", ("Content-Type: image/png",)),
}
# Where a sampled stack's time goes: the innermost frame matching one of these names decides (the first
# part listed wins when one frame matches several). py-spy names frames "function (path:line)".
PROFILE_PARTS = (
    ("image decoding and preprocessing", ("service/preprocess.py", "decode_image")),
    (
        "model call (interpreter invoke while holding the GIL)",
        ("TFLiteModel.predict", "MicroBatcher._call", "service/runtime.py"),
    ),
    (
        "micro-batcher hand-off (queue, futures, conditions)",
        ("MicroBatcher", "Future.", "Condition.", "Arrivals"),
    ),
    ("store writer thread (SQLite)", ("WriteQueue._run", "service/store/")),
    ("building and queueing the record", ("ServiceState._record", "WriteQueue.put", "to_pixels", "_uuid4s")),
    ("metrics", ("service/metrics.py", "prometheus_client")),
    ("access log", ("log_request", "logging/__init__", "pythonjsonlogger", "service/logs.py")),
    ("multipart parsing", ("formparser", "multipart", "Request.files", "_load_form_data")),
    (
        "JSON response (codec encode, pydantic)",
        (
            "encode (",
            "json_response",
            "model_dump_json",
            "dump_json",
            "json/encoder",
            "pydantic",
            "orjson.dumps",
        ),
    ),
    (
        "request decoding (JSON parse, tensor checks)",
        ("service/codecs/", "service/tensors.py", "json/decoder", "json/__init__", "orjson.loads"),
    ),
    ("gunicorn HTTP parsing and socket I/O", ("gunicorn/http", "gunicorn/workers", "selectors", "socket")),
    (
        "request handler and hooks (service/api, service/app.py)",
        ("service/api/", "service/app.py", "service/state.py"),
    ),
    ("Flask and werkzeug, the rest", ("flask/", "werkzeug/")),
)


@dataclass
class Run:
    model: str
    concurrency: int
    result: dict[str, Any]
    server_cpu_s: float = 0.0  # CPU time the server processes used during the run
    wrk_cpu_s: float = 0.0
    api: str = "/predict PNG upload"
    images: int = 1  # images per request

    @property
    def images_per_s(self) -> float:
        return self.rps * self.images

    @property
    def cpu_ms_per_image(self) -> float:
        return self.cpu_ms_per_request / self.images

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.server_cpu_s / max(1, int(self.result["requests"]))

    @property
    def seconds(self) -> float:
        return float(self.result["duration_us"]) / 1e6

    @property
    def ok(self) -> int:
        return int(self.result["requests"]) - int(self.result["http_errors"])

    @property
    def rps(self) -> float:
        return self.ok / self.seconds

    def ms(self, key: str) -> float:
        return float(self.result[key]) / 1000

    @property
    def errors(self) -> int:
        r = self.result
        return sum(
            int(r[k]) for k in ("http_errors", "connect_errors", "read_errors", "write_errors", "timeouts")
        )


@dataclass
class Report:
    command: str
    settings: dict[str, Any]
    runs: list[Run] = field(default_factory=list)
    single: list[Run] = field(default_factory=list)  # one image per request, JSON tensors and a raw body
    batched: list[Run] = field(default_factory=list)  # BATCH images per request, TF Serving and v2 APIs
    grpc: list[Run] = field(default_factory=list)  # v2 over gRPC, 1 and BATCH images per request
    ceilings: dict[str, dict[int, float]] = field(default_factory=dict)
    model_cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per image, 1 thread, batch 32
    preprocess_ms: float = 0.0
    rss: dict[str, int] = field(default_factory=dict)
    writes: dict[str, float] = field(default_factory=dict)
    recorded: dict[str, int] = field(default_factory=dict)
    sanity: dict[str, str] = field(default_factory=dict)
    loadavg: list[str] = field(default_factory=list)
    loadavg_after: list[str] = field(default_factory=list)
    profiles: dict[str, dict[str, float]] = field(default_factory=dict)  # profiled run -> part -> share
    models_profiled: str = ""
    models: dict[str, str] = field(default_factory=dict)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- inputs ---


def write_pngs(data_dir: Path, folder: Path, count: int) -> tuple[list[bytes], list[int]]:
    """The first `count` MNIST test digits as PNG files 0.png .. (white ink on black, 28x28, as in MNIST)."""
    mnist = load_mnist(data_dir)
    pngs: list[bytes] = []
    for i in range(count):
        buf = io.BytesIO()
        Image.fromarray(mnist.test_images[i], mode="L").save(buf, format="PNG")
        (folder / f"{i}.png").write_bytes(buf.getvalue())
        pngs.append(buf.getvalue())
    return pngs, [int(x) for x in mnist.test_labels[:count]]


def write_bodies(data_dir: Path, folder: Path, count: int) -> dict[str, Path]:
    """`count` request bodies of BATCH test digits per batched API (0.body ..), in folder/<api>/.

    TF Serving: {"instances": [28x28 ints 0..255, ...]}. v2: the binary tensor data extension, a JSON header
    (its length goes in Inference-Header-Content-Length) then the raw UINT8 [BATCH, 28, 28] pixels, the
    cheapest form to parse.
    """
    images = load_mnist(data_dir).test_images
    folders = {api: folder / f"batched-{i}" for i, api in enumerate(BATCHED_APIS)}
    tfserving, v2 = folders.values()
    for path in folders.values():
        path.mkdir()
    for i in range(count):
        batch = images[i * BATCH : (i + 1) * BATCH]
        instances = json.dumps({"instances": batch.tolist()}, separators=(",", ":"))
        (tfserving / f"{i}.body").write_text(instances)
        (v2 / f"{i}.body").write_bytes(V2_HEADER + batch.tobytes())
    return folders


def write_single_bodies(data_dir: Path, folder: Path, pngs: list[bytes]) -> dict[str, Path]:
    """One request body per test digit and single-image API (0.body ..), in folder/single-<i>/.

    v2: a JSON FP32 [1, 28, 28] tensor in 0..1 (flat `data`, as tritonclient sends it); TF Serving:
    {"instances": [28x28 ints 0..255]}; the raw body: the PNG file itself (`Content-Type: image/png`).
    """
    images = load_mnist(data_dir).test_images
    folders = {api: folder / f"single-{i}" for i, api in enumerate(SINGLE_APIS)}
    for path in folders.values():
        path.mkdir()
    v2, tfserving, raw = folders.values()
    for i, png in enumerate(pngs):
        pixels = images[i]
        tensor = {
            "name": "image",
            "datatype": "FP32",
            "shape": [1, 28, 28],
            "data": [round(float(x) / 255, 4) for x in pixels.reshape(-1)],
        }
        (v2 / f"{i}.body").write_text(json.dumps({"inputs": [tensor]}, separators=(",", ":")))
        (tfserving / f"{i}.body").write_text(
            json.dumps({"instances": [pixels.tolist()]}, separators=(",", ":"))
        )
        (raw / f"{i}.body").write_bytes(png)
    return folders


def post_body(url: str, body: bytes, headers: tuple[str, ...]) -> list[int]:
    """Digits predicted for one batched request (either API's answer)."""
    fields = dict(h.split(": ", 1) for h in headers)
    req = urllib.request.Request(url, data=body, headers=fields)
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
        length = resp.headers.get("Inference-Header-Content-Length")
    doc = json.loads(raw[: int(length)] if length else raw)
    if "digit" in doc:  # the own API (/predict)
        return [int(doc["digit"])]
    if "predictions" in doc:
        return [int(np.argmax(p)) for p in doc["predictions"]]
    digits = next(o for o in doc["outputs"] if o["name"] == "digit")
    return [int(d) for d in digits["data"]]


# --- the server ---


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (gunicorn master + workers), from /proc."""
    found = [pid]
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            children = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
        except OSError:
            continue
        for child in children:
            found += process_tree(int(child))
    return found


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the server's processes so far (all their threads)."""
    total = 0
    for p in process_tree(pid):
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pss_bytes(pid: int) -> int:
    """Proportional set size: shared pages split between the processes sharing them, so sums add up."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def server_rss(pid: int) -> dict[str, int]:
    pids = process_tree(pid)
    per = {p: rss_bytes(p) for p in pids}
    return {
        "total": sum(per.values()),
        "pss": sum(pss_bytes(p) for p in pids),
        "master": per[pid],
        "processes": len(pids),
    }


def start_server(env: dict[str, str], url: str, log_path: Path) -> subprocess.Popen[bytes]:
    mnist = shutil.which("mnist", path=str(Path(sys.executable).parent)) or "mnist"
    with log_path.open("wb") as out:
        proc = subprocess.Popen([mnist, "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"mnist serve exited with {proc.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return proc
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    proc.terminate()
    raise SystemExit(f"server not ready within 120 s; see {log_path}")


def post_png(url: str, png: bytes) -> dict[str, Any]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="d.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png
        + f"\r\n--{boundary}--\r\n".encode()
    )
    req = urllib.request.Request(
        url, data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return dict(json.loads(resp.read()))


def replace_block(path: Path, body: str, start: str, end: str) -> None:
    """Put `body` between the markers `start` and `end` of BENCHMARKS.md (in place of the last run's, else at
    the end, which lies in the part `make bench` keeps): how soak.py and bench_durability.py keep theirs."""
    block = f"{start}\n{body.rstrip()}\n{end}\n"
    text = path.read_text() if path.is_file() else ""
    pattern = re.compile(rf"{re.escape(start)}\n.*?{re.escape(end)}\n", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


def stop_server(proc: subprocess.Popen[bytes]) -> float:
    """SIGTERM (graceful: the write queues drain), SIGKILL after 60 s; returns how long it took (ms)."""
    started = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return (time.perf_counter() - started) * 1000


def run_wrk(
    url: str,
    png_dir: Path,
    count: int,
    path: str,
    concurrency: int,
    seconds: float,
    headers: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One wrk run; with `headers`, png_dir holds ready request bodies (see scripts/bench.lua)."""
    threads = min(concurrency, 2)
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{concurrency}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        url,
        "--",
        str(png_dir),
        str(count),
        path,
        *headers,
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    line = [x for x in out.splitlines() if x.startswith("{")][-1]
    return dict(json.loads(line))


def run_grpc(
    target: str, data: Path, model: str, images: int, concurrency: int, seconds: float
) -> dict[str, Any]:
    """One run of scripts/grpc_load.py (its own process, like wrk): ModelInfer with UINT8 [images, 28, 28]."""
    cmd = [
        sys.executable,
        str(GRPC_LOAD),
        target,
        "--model",
        model,
        "--images",
        str(images),
        "--concurrency",
        str(concurrency),
        "--seconds",
        f"{seconds:g}",
        "--data",
        str(data),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def grpc_digits(target: str, images: np.ndarray, model: str) -> list[int]:
    """Digits predicted for one gRPC request of these uint8 images (the sanity check of the gRPC rows)."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    tensor = service_pb2.ModelInferRequest.InferInputTensor(
        name="image", datatype="UINT8", shape=[len(images), 28, 28]
    )
    request = service_pb2.ModelInferRequest(
        model_name=model, inputs=[tensor], raw_input_contents=[images.tobytes()]
    )
    with grpc.insecure_channel(target) as channel:
        answer = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    index = [o.name for o in answer.outputs].index("digit")
    return np.frombuffer(answer.raw_output_contents[index], dtype="<i8").tolist()


# --- in-process measurements ---


def ceiling(tflite: Path, images: np.ndarray, threads: int, batch: int, rounds: int = 3) -> float:
    """Images/s of the bare model on batches of `batch` (best of `rounds` 1.5 s windows: the machine is
    shared, the best window is the one least disturbed)."""
    model = TFLiteModel.load(tflite, threads=threads)
    model.predict(images[:batch])
    best = 0.0
    for _ in range(rounds):
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < 1.5:
            for i in range(0, len(images) - batch + 1, batch):
                model.predict(images[i : i + batch])
                done += batch
        best = max(best, done / (time.perf_counter() - started))
    return best


def preprocess_ms(pngs: list[bytes], settings: Settings) -> float:
    """Mean CPU time (this thread) to turn one upload into the 28x28 model input."""
    from service.preprocess import preprocess

    started = time.thread_time()
    rounds = 5
    for _ in range(rounds):
        for png in pngs:
            preprocess(png, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels)
    return (time.thread_time() - started) * 1000 / (rounds * len(pngs))


def model_cpu_per_image(tflite: Path, images: np.ndarray, batch: int = 32, rounds: int = 3) -> float:
    """CPU seconds per image of one single-threaded interpreter on batches (least of `rounds`)."""
    model = TFLiteModel.load(tflite, threads=1)
    model.predict(images[:batch])
    best = float("inf")
    for _ in range(rounds):
        done, started = 0, time.process_time()
        for i in range(0, min(len(images), 4096) - batch + 1, batch):
            model.predict(images[i : i + batch])
            done += batch
        best = min(best, (time.process_time() - started) / done)
    return best


def write_path(folder: Path, pngs: list[bytes]) -> dict[str, float]:
    """Records/s into SQLite: one transaction per record, batches of 256, and through the write queue."""

    def records(n: int) -> list[PredictionRecord]:
        now = datetime.now(UTC)
        probs = tuple([0.1] * 10)
        return [
            PredictionRecord(
                id=uuid.uuid4(),
                created=now,
                model="cnn",
                version="1",
                digit=i % 10,
                confidence=0.9,
                probabilities=probs,
                pixels=bytes(784),
                latency_ms=1.0,
                image=pngs[i % len(pngs)],
                image_type="image/png",
                client="127.0.0.1",
                request_id=uuid.uuid4().hex,
            )
            for i in range(n)
        ]

    def single(store: SqliteStore, recs: list[PredictionRecord]) -> None:
        for rec in recs:
            store.record(rec)

    def batches(store: SqliteStore, recs: list[PredictionRecord]) -> None:
        for i in range(0, len(recs), 256):
            store.record_many(recs[i : i + 256])

    def queued(store: SqliteStore, recs: list[PredictionRecord]) -> None:
        queue = WriteQueue(store, maxsize=len(recs)).start()
        for rec in recs:
            queue.put(rec)
        queue.drain(timeout=120)

    # Each way into a fresh file, best of three rounds (the machine is shared).
    result: dict[str, float] = {}
    for name, write, n in (
        ("single", single, 2000),
        ("batch256", batches, 10_000),
        ("queue", queued, 10_000),
    ):
        for round_ in range(3):
            store = SqliteStore(folder / f"writes-{name}-{round_}.db")
            recs = records(n)
            started = time.perf_counter()
            write(store, recs)
            result[name] = max(result.get(name, 0.0), n / (time.perf_counter() - started))
            store.close()
    return result


def start_profile(py_spy: str, server_pid: int, tmp: Path, seconds: float) -> list[Path]:
    """Sample each worker's Python stacks while it holds the GIL, during the next wrk run."""
    outputs = []
    tmp.mkdir(parents=True, exist_ok=True)
    for pid in process_tree(server_pid)[1:]:
        out = tmp / f"py-spy-{pid}.txt"
        cmd = [py_spy, "record", "--pid", str(pid), "--gil", "--nonblocking", "--rate", "200"]
        cmd += ["--duration", str(max(1, int(seconds) - 2)), "--format", "raw", "--output", str(out)]
        subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        outputs.append(out)
    return outputs


def finish_profile(outputs: list[Path]) -> dict[str, float]:
    """Share of GIL-holding samples per part of the request path (collapsed stacks: 'a;b;c count')."""
    deadline = time.monotonic() + 30
    while not all(p.exists() and p.stat().st_size for p in outputs) and time.monotonic() < deadline:
        time.sleep(0.5)
    parts: dict[str, float] = {}
    total = 0
    for path in outputs:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            total += int(count)
            part = next(
                (
                    name
                    for frame in reversed(stack.split(";"))
                    for name, keys in PROFILE_PARTS
                    if any(k in frame for k in keys)
                ),
                "other",
            )
            parts[part] = parts.get(part, 0) + int(count)
    return {k: v / total for k, v in sorted(parts.items(), key=lambda kv: -kv[1])} if total else {}


# --- the report ---


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor() or "unknown",
    )  # fmt: skip
    return f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, Python {platform.python_version()}"


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    dirty = " (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else ""
    return git("rev-parse", "--short", "HEAD") + dirty


def profile_section(report: Report) -> list[str]:
    if not report.profiles:
        return []
    names = list(report.profiles)
    parts = sorted(
        {part for shares in report.profiles.values() for part in shares},
        key=lambda part: -max(shares.get(part, 0.0) for shares in report.profiles.values()),
    )
    lines = [
        f"## Where the workers' Python time goes ({report.models_profiled} at concurrency {PROFILE_AT})",
        "",
        "py-spy samples of each worker while it holds the GIL (`py-spy record --gil`), sorted into the parts "
        "of the request path by the innermost matching frame, for a PNG upload (`POST /predict` multipart) "
        "and a single v2 JSON FP32 tensor:",
        "",
        "| part | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    lines += [
        f"| {part} | " + " | ".join(f"{report.profiles[n].get(part, 0.0):.1%}" for n in names) + " |"
        for part in parts
    ]
    return [*lines, ""]


def cpu_targets(report: Report) -> list[str]:
    """The CPU-per-request targets (issue 12) of the cnn rows: the highest CPU figure among matching runs."""
    rows = []
    for label, runs, limit, per_image in (
        (
            "v2 JSON FP32, 1 image, concurrency 32",
            [r for r in report.single if r.api == "v2 JSON FP32"],
            0.6,
            False,
        ),
        (
            "TF Serving JSON, 1 image, concurrency 32",
            [r for r in report.single if r.api == "TF Serving JSON"],
            0.6,
            False,
        ),
        ("/predict PNG multipart, concurrency 32", report.runs, 0.8, False),
        (
            "/predict raw PNG body, concurrency 32",
            [r for r in report.single if r.api == "/predict raw PNG body"],
            0.7,
            False,
        ),
        (
            f"v2 binary UINT8, {BATCH} images per request",
            [r for r in report.batched if r.api == "v2 binary UINT8"],
            0.25,
            True,
        ),
    ):
        chosen = [r for r in runs if r.model == "cnn" and (per_image or r.concurrency == 32)]
        if not chosen:
            continue
        worst = max(r.cpu_ms_per_image if per_image else r.cpu_ms_per_request for r in chosen)
        unit = "ms CPU per image" if per_image else "ms CPU per request"
        rows.append(
            f"| cnn: {label}: <= {limit:g} {unit} | {worst:.3f} | {'yes' if worst <= limit else 'no'} |"
        )
    c1 = [r for r in report.runs + report.single if r.model == "cnn" and r.concurrency == 1]
    if c1:
        worst = max(r.ms("p50_us") for r in c1)
        rows.append(
            f"| cnn: p50 <= 1.5 ms at concurrency 1 (every single-image form) | {worst:.2f} ms "
            f"| {'yes' if worst <= 1.5 else 'no'} |"
        )
    return rows


def single_section(report: Report) -> list[str]:
    if not report.single:
        return []
    lines = [
        "",
        "## Single images in other forms",
        "",
        "One MNIST test digit per request (cycling through the same digits as above): a v2 JSON FP32 tensor "
        '[1, 28, 28] (`POST /v2/models/<m>/infer`), TF Serving JSON `{"instances": [28x28 ints]}` '
        "(`POST /v1/models/<m>:predict`), and the PNG file as the raw body of `POST /predict` "
        "(`Content-Type: image/png`, no multipart).",
        "",
        "| model | API | concurrency | predictions/s | p50 ms | p90 ms | p99 ms | errors "
        "| server CPU ms/request | server cores busy | wrk cores busy |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report.single:
        lines.append(
            f"| {r.model} | {r.api} | {r.concurrency} | {r.rps:,.0f} | {r.ms('p50_us'):.2f} "
            f"| {r.ms('p90_us'):.2f} | {r.ms('p99_us'):.2f} | {r.errors} | {r.cpu_ms_per_request:.2f} "
            f"| {r.server_cpu_s / r.seconds:.2f} | {r.wrk_cpu_s / r.seconds:.2f} |"
        )
    return lines


def batched_section(report: Report) -> list[str]:
    if not report.batched:
        return []
    s = report.settings
    lines = [
        "",
        f"## Batched requests ({BATCH} images per request)",
        "",
        f"How TF Serving and Triton users push throughput: each request carries {BATCH} MNIST test digits "
        f"(cycling through {s['bodies']} such requests), to the TF Serving REST API (`POST "
        '/v1/models/<m>:predict`, JSON `{"instances": [28x28 ints 0..255, ...]}`) and to the Open '
        f"Inference Protocol v2 (`POST /v2/models/<m>/infer`, a UINT8 tensor [{BATCH}, 28, 28] with the "
        "binary tensor data extension: a JSON header, then the raw pixels). No image decoding; every image "
        "is still recorded. Latency is per request; the ceiling is the one above.",
        "",
        "| model | API | concurrency | images/s | requests/s | p50 ms | p99 ms | errors "
        "| server CPU ms/image | server cores busy | images/s / ceiling |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report.batched:
        top = max(report.ceilings.get(r.model, {0: 0.0}).values())
        ratio = f"{r.images_per_s / top:.1%}" if top else "n/a"
        lines.append(
            f"| {r.model} | {r.api} | {r.concurrency} | {r.images_per_s:,.0f} | {r.rps:,.0f} "
            f"| {r.ms('p50_us'):.2f} | {r.ms('p99_us'):.2f} | {r.errors} | {r.cpu_ms_per_image:.3f} "
            f"| {r.server_cpu_s / r.seconds:.2f} | {ratio} |"
        )
    return lines


def grpc_section(report: Report) -> list[str]:
    if not report.grpc:
        return []
    lines = [
        "",
        "## Open Inference Protocol v2 over gRPC",
        "",
        "`inference.GRPCInferenceService/ModelInfer` served by every worker on one SO_REUSEPORT port, a "
        "UINT8 tensor [N, 28, 28] in `raw_input_contents` (what tritonclient sends), N = 1 or "
        f"{BATCH} MNIST test digits per call. Load from scripts/grpc_load.py (wrk speaks no HTTP/2): its own "
        "process, closed loop, one connection per concurrent call. Every image is recorded as over REST.",
        "",
        "| model | images/request | concurrency | images/s | requests/s | p50 ms | p99 ms | errors "
        "| server CPU ms/image | server CPU ms/request | server cores busy | load generator cores busy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report.grpc:
        lines.append(
            f"| {r.model} | {r.images} | {r.concurrency} | {r.images_per_s:,.0f} | {r.rps:,.0f} "
            f"| {r.ms('p50_us'):.2f} | {r.ms('p99_us'):.2f} | {r.errors} | {r.cpu_ms_per_image:.3f} "
            f"| {r.cpu_ms_per_request:.3f} | {r.server_cpu_s / r.seconds:.2f} "
            f"| {r.wrk_cpu_s / r.seconds:.2f} |"
        )
    return lines


# BENCHMARKS.md from this heading on holds figures other scripts measured (model latency, preprocessing,
# Cassandra); a bench run rewrites everything above it and keeps that part as it is.
BY_HAND = "## Measured by other scripts"


def kept_by_hand(path: Path) -> str:
    """The hand-maintained tail of the previous report, or "" when there is none."""
    text = path.read_text() if path.is_file() else ""
    start = text.find(f"\n{BY_HAND}\n")
    return "\n" + text[start + 1 :] if start >= 0 else ""


def render(report: Report) -> str:
    s = report.settings
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (scripts/bench.py); numbers are from the last run, on a machine whose",
        "cores are shared by the server *and* the load generator (wrk), so they are a floor, not a ceiling.",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M UTC}; commit {git_commit()}",
        f"- Machine: {machine()}; load average (1, 5, 15 min) before the run: {' '.join(report.loadavg)}, "
        f"after: {' '.join(report.loadavg_after)} (other work on the machine takes cores from both sides)",
        f"- Command: `{report.command}`",
        f"- Models: {', '.join(report.models.values())}",
        f"- Server: `mnist serve`, gunicorn {s['workers']} workers x {s['threads']} threads (admission bound "
        f"{s['max_inflight']} per worker), micro-batch "
        f"<= {s['max_batch_size']} images / {s['max_batch_wait_ms']} ms, LiteRT "
        f"{s['inference_threads']} thread(s) per worker, SQLite store (write-behind queue), JSON access log.",
        f"- Load: wrk {s['seconds']:g} s per row after a warm-up, POST /predict?model=<m> with one of "
        f"{s['pngs']} MNIST test digits as a PNG multipart upload per request (closed loop: each connection "
        "sends its next request when the answer arrives).",
        "",
        "## HTTP",
        "",
        "| model | concurrency | predictions/s | p50 ms | p90 ms | p99 ms | max ms | errors "
        "| server CPU ms/request | server cores busy | wrk cores busy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report.runs:
        lines.append(
            f"| {r.model} | {r.concurrency} | {r.rps:,.0f} | {r.ms('p50_us'):.2f} | {r.ms('p90_us'):.2f} "
            f"| {r.ms('p99_us'):.2f} | {r.ms('max_us'):.1f} | {r.errors} | {r.cpu_ms_per_request:.2f} "
            f"| {r.server_cpu_s / r.seconds:.2f} | {r.wrk_cpu_s / r.seconds:.2f} |"
        )
    cores = os.cpu_count() or 1
    lines += [
        "",
        "CPU-bound check: with every core free for the server, throughput could reach at most cores x 1000 / "
        "(server CPU ms per request): "
        + "; ".join(
            f"{r.model} at concurrency {r.concurrency}: {cores * 1000 / r.cpu_ms_per_request:,.0f}/s"
            for r in report.runs
            if r.concurrency == max(x.concurrency for x in report.runs) and r.cpu_ms_per_request > 0
        )
        + ".",
        "",
        "## Against the in-process ceiling",
        "",
        f"The ceiling is the bare model (`TFLiteModel.predict`) on batches of 32 and 64 in one process with "
        f"{s['ceiling_threads']} LiteRT threads (the server's total: workers x inference threads), no HTTP, "
        "no image decoding; wall-clock, so other work on the machine lowers it as it lowers HTTP numbers.",
        "",
        "| model | ceiling, batch 32 (img/s) | batch 64 | HTTP, best (pred/s) | HTTP / ceiling |",
        "|---|---:|---:|---:|---:|",
    ]
    for model, by_batch in report.ceilings.items():
        best = max((r.rps for r in report.runs if r.model == model), default=0.0)
        top = max(by_batch.values())
        lines.append(
            f"| {model} | {by_batch[32]:,.0f} | {by_batch[64]:,.0f} | {best:,.0f} | {best / top:.1%} |"
        )
    lines += [
        "",
        "The same comparison in CPU time, which a busy machine disturbs far less: the model's CPU time per "
        "image (one LiteRT thread, batches of 32, as each worker runs it), one PNG's decoding and "
        f"preprocessing ({report.preprocess_ms:.3f} ms CPU), and the server's CPU time per request measured "
        f"during the HTTP runs (all its processes and threads). Capacities are {cores} cores / CPU time.",
        "",
        "| model | model CPU/image | model-only capacity (img/s) | + preprocessing (img/s) "
        "| server CPU/request | HTTP capacity (pred/s) | HTTP / model-only | HTTP / + preprocessing |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model, per_image in report.model_cpu.items():
        runs = [r for r in report.runs if r.model == model and r.cpu_ms_per_request > 0]
        if not runs or per_image <= 0:
            continue
        request_ms = min(r.cpu_ms_per_request for r in runs)
        model_only = cores / per_image
        with_pre = cores / (per_image + report.preprocess_ms / 1000)
        http = cores * 1000 / request_ms
        lines.append(
            f"| {model} | {per_image * 1e6:,.0f} µs | {model_only:,.0f} | {with_pre:,.0f} "
            f"| {request_ms:.2f} ms | {http:,.0f} | {http / model_only:.1%} | {http / with_pre:.0%} |"
        )
    lines += single_section(report)
    lines += batched_section(report)
    lines += grpc_section(report)
    rss = report.rss
    lines += [
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for model in report.ceilings:
        c1 = next((r for r in report.runs if r.model == model and r.concurrency == 1), None)
        if c1:
            lines.append(
                f"| {model}: p50 <= {TARGET_P50_MS:g} ms at concurrency 1 | {c1.ms('p50_us'):.2f} ms "
                f"| {'yes' if c1.ms('p50_us') <= TARGET_P50_MS else 'no'} |"
            )
    cnn32 = next((r for r in report.runs if r.model == "cnn" and r.concurrency == 32), None)
    if cnn32:
        lines.append(
            f"| cnn: >= {TARGET_CNN_RPS_AT_32:,.0f} predictions/s at concurrency 32 | {cnn32.rps:,.0f}/s "
            f"| {'yes' if cnn32.rps >= TARGET_CNN_RPS_AT_32 else 'no'} |"
        )
    for model, by_batch in report.ceilings.items():
        best = max((r.rps for r in report.runs if r.model == model), default=0.0)
        ratio = best / max(by_batch.values())
        lines.append(
            f"| {model}: HTTP >= {TARGET_RATIO:.0%} of the in-process ceiling | {ratio:.1%} "
            f"| {'yes' if ratio >= TARGET_RATIO else 'no'} |"
        )
    for api in BATCHED_APIS:
        runs = [r for r in report.batched if r.model == "cnn" and r.api == api]
        if runs and "cnn" in report.ceilings:
            ratio = max(r.images_per_s for r in runs) / max(report.ceilings["cnn"].values())
            lines.append(
                f"| cnn: HTTP >= {TARGET_RATIO:.0%} of the in-process ceiling ({BATCH} images per request, "
                f"{api}) | {ratio:.1%} | {'yes' if ratio >= TARGET_RATIO else 'no'} |"
            )
    lines += cpu_targets(report)
    lines += [
        f"| server RSS reported | {rss.get('total', 0) / 2**20:,.0f} MiB in {rss.get('processes', 0)} "
        f"processes (master {rss.get('master', 0) / 2**20:,.0f} MiB); PSS (shared pages counted once) "
        f"{rss.get('pss', 0) / 2**20:,.0f} MiB; after the load | yes |",
        "",
        *profile_section(report),
        "## Write path (SQLite, in process)",
        "",
        "| how | records/s |",
        "|---|---:|",
        f"| `record()`, one transaction per record | {report.writes.get('single', 0):,.0f} |",
        f"| `record_many()`, 256 per transaction | {report.writes.get('batch256', 0):,.0f} |",
        f"| `WriteQueue.put()`, then `drain()` (the server's path) | {report.writes.get('queue', 0):,.0f} |",
        "",
        f"After SIGTERM the server had recorded {report.recorded.get('stored', 0):,} predictions; wrk "
        f"counted {report.recorded.get('answered', 0):,} answered ones (wrk does not count requests still "
        "in flight when a run ends, so stored >= answered means none was lost). "
        f"Shutdown (drain included) took {report.recorded.get('shutdown_ms', 0) / 1000:.1f} s.",
        "",
        f"Sanity check before the load: {'; '.join(f'{m}: {v}' for m, v in report.sanity.items())}.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="softmax,cnn", help="comma-separated model names")
    parser.add_argument("--concurrency", default="1,8,32,64", help="comma-separated connection counts")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each wrk run")
    parser.add_argument("--workers", type=int, default=None, help="gunicorn workers [MNIST_WORKERS or 2]")
    parser.add_argument("--threads", type=int, default=None, help="threads per worker [MNIST_THREADS or 64]")
    parser.add_argument("--pngs", type=int, default=200, help="distinct test digits to cycle through")
    parser.add_argument(
        "--batched-concurrency", default="4,16", help=f"connection counts for {BATCH} images per request"
    )
    parser.add_argument("--bodies", type=int, default=50, help=f"distinct {BATCH}-image requests to cycle")
    parser.add_argument(
        "--single-concurrency", default="1,32", help="connection counts of the single-image JSON and raw rows"
    )
    parser.add_argument("--grpc-concurrency", default="1,32", help="concurrent calls of the gRPC rows")
    parser.add_argument("--grpc-images", default=f"1,{BATCH}", help="images per gRPC request")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument(
        "--overload-seconds", type=float, default=10.0, help="each overload row (0: keep the last ones)"
    )
    parser.add_argument("--http-only", action="store_true", help="only the HTTP runs, printed, no report")
    parser.add_argument(
        "--no-profile", dest="profile", action="store_false", help="skip py-spy (used when on PATH)"
    )
    parser.add_argument(
        "--no-durability", dest="durability", action="store_false", help="skip the MNIST_DURABILITY runs"
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: scripts/install-system-deps.sh (Debian package wrk)")

    base = Settings()
    models = [m for m in args.models.split(",") if m]
    levels = [int(c) for c in args.concurrency.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="mnist-bench-"))
    png_dir = tmp / "pngs"
    png_dir.mkdir()
    pngs, labels = write_pngs(base.data_dir, png_dir, args.pngs)
    bodies = write_bodies(base.data_dir, tmp, args.bodies)
    singles = write_single_bodies(base.data_dir, tmp, pngs)
    single_levels = [int(c) for c in args.single_concurrency.split(",") if c]
    batch_labels = [int(y) for y in load_mnist(base.data_dir).test_labels[:BATCH]]
    batched_levels = [int(c) for c in args.batched_concurrency.split(",") if c]
    grpc_levels = [int(c) for c in args.grpc_concurrency.split(",") if c]
    grpc_sizes = [int(n) for n in args.grpc_images.split(",") if n]
    grpc_data = tmp / "digits.npy"
    np.save(grpc_data, load_mnist(base.data_dir).test_images[:2000])
    # A private copy of each model's latest version: the run measures one fixed set of artifacts.
    model_dir = tmp / "models"
    notes: dict[str, str] = {}
    for model in models:
        artifact = latest(base.model_dir, model)
        shutil.copytree(artifact.path, model_dir / model / artifact.version)
        notes[model] = f"{model} v{artifact.version} (test accuracy {artifact.accuracy:.2%})"
        log(f"{model}: version {artifact.version} from {artifact.path}")

    py_spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if not args.profile:
        py_spy = None
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    grpc_target = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "MNIST_HOST": "127.0.0.1",
        "MNIST_PORT": str(port),
        "MNIST_GRPC_PORT": grpc_target.rsplit(":", 1)[1],
        "MNIST_STORE_URL": f"sqlite:///{tmp / 'predictions.db'}",
        "MNIST_SPOOL_DIR": str(tmp / "spool"),
        "MNIST_MODEL_DIR": str(model_dir),
        "MNIST_DEFAULT_MODEL": base.default_model if base.default_model in models else models[0],
    }
    if args.workers:
        env["MNIST_WORKERS"] = str(args.workers)
    if args.threads:
        env["MNIST_THREADS"] = str(args.threads)
    served = Settings(**{k: v for k, v in {"workers": args.workers, "threads": args.threads}.items() if v})
    report = Report(
        command=shlex.join(["python", "scripts/bench.py", *sys.argv[1:]]),
        settings={
            "workers": served.workers,
            "threads": served.threads,
            "max_inflight": served.max_inflight,
            "max_batch_size": served.max_batch_size,
            "max_batch_wait_ms": served.max_batch_wait_ms,
            "inference_threads": served.inference_threads,
            "ceiling_threads": served.workers * served.inference_threads,
            "seconds": args.seconds,
            "pngs": args.pngs,
            "bodies": args.bodies,
        },
        loadavg=Path("/proc/loadavg").read_text().split()[:3],
        models=notes,
    )

    log(
        f"starting mnist serve on {url} ({served.workers} workers x {served.threads} threads), files in {tmp}"
    )
    proc = start_server(env, url, tmp / "server.log")
    answered = 0
    try:
        for model in models:
            replies = [post_png(f"{url}/predict?model={model}", png) for png in pngs]
            answered += len(replies)
            right = sum(int(r["digit"]) == y for r, y in zip(replies, labels, strict=True))
            report.sanity[model] = f"{right}/{len(labels)} of the PNG digits predicted right over HTTP"
            log(f"{model}: warm-up; {report.sanity[model]}")
            warm = run_wrk(url, png_dir, len(pngs), f"/predict?model={model}", 8, 3)
            answered += int(warm["requests"]) - int(warm["http_errors"])
            for c in levels:
                cpu, wrk_cpu = cpu_seconds(proc.pid), children_cpu_seconds()
                result = run_wrk(url, png_dir, len(pngs), f"/predict?model={model}", c, args.seconds)
                cpu, wrk_cpu = cpu_seconds(proc.pid) - cpu, children_cpu_seconds() - wrk_cpu
                run = Run(model, c, result, cpu, wrk_cpu)
                answered += run.ok
                report.runs.append(run)
                log(
                    f"{model} c={c}: {run.rps:,.0f}/s p50 {run.ms('p50_us'):.2f} ms "
                    f"p99 {run.ms('p99_us'):.2f} ms errors {run.errors}, "
                    f"server CPU {run.cpu_ms_per_request:.2f} ms/request"
                )
            for api, (template, headers) in SINGLE_APIS.items():
                path, folder = template.format(model=model), singles[api]
                digits = [
                    post_body(f"{url}{path}", (folder / f"{i}.body").read_bytes(), headers)[0]
                    for i in range(20)
                ]
                answered += len(digits)
                right = sum(d == y for d, y in zip(digits, labels, strict=False))
                report.sanity[f"{model} {api}"] = f"{right}/{len(digits)} single-digit requests right"
                warm = run_wrk(url, folder, len(pngs), path, 8, 2, headers)
                answered += int(warm["requests"]) - int(warm["http_errors"])
                for c in single_levels:
                    cpu, wrk_cpu = cpu_seconds(proc.pid), children_cpu_seconds()
                    result = run_wrk(url, folder, len(pngs), path, c, args.seconds, headers)
                    cpu, wrk_cpu = cpu_seconds(proc.pid) - cpu, children_cpu_seconds() - wrk_cpu
                    run = Run(model, c, result, cpu, wrk_cpu, api)
                    answered += run.ok
                    report.single.append(run)
                    log(
                        f"{model} {api} c={c}: {run.rps:,.0f}/s p50 {run.ms('p50_us'):.2f} ms "
                        f"p99 {run.ms('p99_us'):.2f} ms errors {run.errors}, "
                        f"server CPU {run.cpu_ms_per_request:.2f} ms/request"
                    )
            for api, (template, headers) in BATCHED_APIS.items():
                path, folder = template.format(model=model), bodies[api]
                digits = post_body(f"{url}{path}", (folder / "0.body").read_bytes(), headers)
                answered += len(digits)
                right = sum(d == y for d, y in zip(digits, batch_labels, strict=True))
                report.sanity[f"{model} {api}"] = f"{right}/{BATCH} of one {BATCH}-digit request right"
                warm = run_wrk(url, folder, args.bodies, path, 4, 3, headers)
                answered += BATCH * (int(warm["requests"]) - int(warm["http_errors"]))
                for c in batched_levels:
                    cpu, wrk_cpu = cpu_seconds(proc.pid), children_cpu_seconds()
                    result = run_wrk(url, folder, args.bodies, path, c, args.seconds, headers)
                    cpu, wrk_cpu = cpu_seconds(proc.pid) - cpu, children_cpu_seconds() - wrk_cpu
                    run = Run(model, c, result, cpu, wrk_cpu, api, BATCH)
                    answered += BATCH * run.ok
                    report.batched.append(run)
                    log(
                        f"{model} {api} c={c}: {run.images_per_s:,.0f} images/s ({run.rps:,.0f} requests/s) "
                        f"p50 {run.ms('p50_us'):.2f} ms p99 {run.ms('p99_us'):.2f} ms errors {run.errors}, "
                        f"server CPU {run.cpu_ms_per_image:.3f} ms/image"
                    )
            if grpc_levels and grpc_sizes:
                test = load_mnist(base.data_dir)
                digits = grpc_digits(grpc_target, test.test_images[:BATCH], model)
                answered += len(digits)
                right = sum(d == int(y) for d, y in zip(digits, test.test_labels[:BATCH], strict=True))
                report.sanity[f"{model} gRPC"] = f"{right}/{BATCH} of one {BATCH}-digit gRPC request right"
                warm = run_grpc(grpc_target, grpc_data, model, 1, 4, 3)
                answered += int(warm["requests"]) - int(warm["http_errors"])
            for n in grpc_sizes:
                for c in grpc_levels:
                    cpu, load_cpu = cpu_seconds(proc.pid), children_cpu_seconds()
                    result = run_grpc(grpc_target, grpc_data, model, n, c, args.seconds)
                    cpu, load_cpu = cpu_seconds(proc.pid) - cpu, children_cpu_seconds() - load_cpu
                    run = Run(model, c, result, cpu, load_cpu, "v2 gRPC UINT8", n)
                    answered += n * run.ok
                    report.grpc.append(run)
                    log(
                        f"{model} gRPC {n} image(s) c={c}: {run.images_per_s:,.0f} images/s "
                        f"({run.rps:,.0f} requests/s) p50 {run.ms('p50_us'):.2f} ms "
                        f"p99 {run.ms('p99_us'):.2f} ms "
                        f"errors {run.errors}, server CPU {run.cpu_ms_per_image:.3f} ms/image"
                    )
        report.rss = server_rss(proc.pid)
        # Extra runs, so that sampling does not disturb the measured ones: a PNG upload and a JSON tensor.
        profiled = {
            "PNG multipart": (png_dir, f"/predict?model={models[-1]}", ()),
            "v2 JSON FP32": (singles["v2 JSON FP32"], *SINGLE_APIS["v2 JSON FP32"]),
        }
        for name, (folder, template, headers) in profiled.items() if py_spy else ():
            log(f"{models[-1]} {name} c={PROFILE_AT}: profiling the workers with py-spy")
            profiling = start_profile(str(py_spy), proc.pid, tmp / name.replace(" ", "-"), args.seconds)
            path = template.format(model=models[-1])
            extra = run_wrk(url, folder, len(pngs), path, PROFILE_AT, args.seconds, headers)
            answered += int(extra["requests"]) - int(extra["http_errors"])
            report.profiles[name] = finish_profile(profiling)
            log(f"profile {name}: " + ", ".join(f"{k} {v:.1%}" for k, v in report.profiles[name].items()))
            report.models_profiled = models[-1]
    finally:
        shutdown_ms = stop_server(proc)
    with sqlite3.connect(tmp / "predictions.db") as conn:
        stored = int(conn.execute("SELECT count(*) FROM predictions").fetchone()[0])
    report.recorded = {"stored": stored, "answered": answered, "shutdown_ms": int(shutdown_ms)}
    log(f"server stopped in {shutdown_ms / 1000:.1f} s; {stored} records stored, {answered} answered")

    if args.http_only:  # experiments: compare server settings quickly
        log("--http-only: no in-process measurements, no report written")
        shutil.rmtree(tmp, ignore_errors=True)
        return
    mnist = load_mnist(base.data_dir)
    images = mnist.test_images.astype(np.float32) / 255.0
    for model in models:
        artifact = latest(model_dir, model)
        threads = report.settings["ceiling_threads"]
        report.ceilings[model] = {b: ceiling(artifact.tflite_path, images, threads, b) for b in (32, 64)}
        report.model_cpu[model] = model_cpu_per_image(artifact.tflite_path, images)
        log(
            f"{model} in-process ceiling: {report.ceilings[model]}, CPU/image {report.model_cpu[model]:.6f} s"
        )
    report.preprocess_ms = preprocess_ms(pngs, base)
    report.writes = write_path(tmp, pngs)
    log(f"write path: {report.writes}")

    if args.overload_seconds > 0:  # its own servers: shed rate and accepted latency at 1x, 2x, 3x capacity
        overload = bench_overload.measure(
            start_server, env, url, base.data_dir, tmp / "overload", args.overload_seconds
        )
    else:
        overload = bench_overload.kept_section(args.out)
    report.loadavg_after = Path("/proc/loadavg").read_text().split()[:3]
    args.out.write_text(render(report) + "\n" + "\n".join(overload) + kept_by_hand(args.out))
    log(f"wrote {args.out}")
    if args.durability:  # its own block, in the part of the report kept between runs
        import bench_durability

        bench_durability.run(args.out, args.seconds, [1, 8, 32], command=report.command)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
