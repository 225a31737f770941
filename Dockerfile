# mnist-service: the HTTP service (gunicorn via `mnist serve`) with the shipped LiteRT models. No TensorFlow.
#
#   podman build --format docker -t localhost/mnist-service:0.1.0 .      (or `make image`, which also makes a base)
#   podman run --rm -p 8000:8000 --read-only --tmpfs /tmp --tmpfs /var/lib/mnist:U --tmpfs /var/spool/mnist:U \
#     --tmpfs /run/prometheus:U localhost/mnist-service:0.1.0
#
# Everything is configured by MNIST_* environment variables (see docs/configuration.md).

# Any Debian-based image with python3 (>= 3.11) and its venv module: the official slim image by default;
# `make image` passes a local debootstrap Debian instead.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# --- builder: compilers live here only --------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    # cassandra-driver builds its C extensions (murmur3 token hashing, libev) without Cython: seconds, not minutes.
    CASS_DRIVER_NO_CYTHON=1
# gcc and the Python headers for the dependencies that ship no wheel for this platform (cassandra-driver).
RUN set -eux; \
    apt-get update; \
    packages="gcc libc6-dev libev-dev"; \
    python3 -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))' \
        || packages="$packages python3-dev"; \
    apt-get install -y --no-install-recommends $packages; \
    rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, from pyproject alone: this layer is rebuilt only when the pins change.
COPY pyproject.toml ./
RUN set -eux; \
    python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > requirements.txt; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip wheel --wheel-dir /wheels -r requirements.txt; \
    /opt/venv/bin/pip install --no-index --find-links /wheels -r requirements.txt; \
    # LiteRT ships its runtime with full symbol tables; running needs only the dynamic ones: ~100 MB less.
    # (Only LiteRT: libraries that auditwheel rewrote with patchelf, like numpy's, break when stripped.)
    find /opt/venv/lib/python3*/site-packages/ai_edge_litert -name '*.so' -type f -exec strip --strip-unneeded {} +
# Then the project itself (no dependencies left to fetch).
COPY README.md ./
COPY service ./service
RUN set -eux; \
    /opt/venv/bin/pip install --no-deps .; \
    # Nothing installs packages at run time.
    /opt/venv/bin/python -m pip uninstall -y setuptools pip

# --- runtime: the venv, the models, a non-root user ----------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="mnist-service" \
      org.opencontainers.image.description="Handwritten digit recognition over HTTP (LiteRT models, gunicorn)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# libev4: the event loop a cassandra-driver compiled in the builder links against (its wheel bundles one).
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends libev4; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log; \
    groupadd --gid 10001 mnist; \
    useradd --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin mnist; \
    # The only writable places; mount volumes (emptyDir, tmpfs) here when the root filesystem is read-only.
    install -d -o 10001 -g 10001 -m 0750 /var/lib/mnist /var/spool/mnist /run/prometheus
COPY --from=builder /opt/venv /opt/venv
COPY --chown=root:root models /opt/mnist/models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MNIST_HOST=0.0.0.0 \
    MNIST_PORT=8000 \
    MNIST_MODEL_DIR=/opt/mnist/models \
    MNIST_STORE_URL=sqlite:////var/lib/mnist/predictions.db \
    MNIST_SPOOL_DIR=/var/spool/mnist \
    PROMETHEUS_MULTIPROC_DIR=/run/prometheus
WORKDIR /var/lib/mnist
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('MNIST_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["mnist"]
CMD ["serve"]

# --- dev: `skaffold dev` only; the service user owns the package so file sync can replace the .py files, and
# gunicorn restarts its workers when they change.
FROM runtime AS dev
USER root
RUN chown -R 10001:10001 /opt/venv/lib/python3*/site-packages/service
USER 10001:10001
ENV GUNICORN_CMD_ARGS="--reload"

# --- trainer: `mnist retrain` (and `mnist train`) for the chart's retraining CronJob. TensorFlow and matplotlib
# (the `train` extra, pinned in pyproject.toml) live only in this image; the serving image stays without them.
#   podman build --format docker --target trainer -t localhost/mnist-service-trainer:0.1.0 .
FROM builder AS trainer-venv
RUN set -eux; \
    /opt/venv/bin/python -m ensurepip; \
    python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["train"]))' \
        > train-requirements.txt; \
    /opt/venv/bin/python -m pip install -r train-requirements.txt; \
    /opt/venv/bin/python -m pip uninstall -y setuptools pip

FROM runtime AS trainer
COPY --from=trainer-venv /opt/venv /opt/venv
# Keras and matplotlib keep their caches under $HOME; the root filesystem is read-only, /tmp is a volume.
ENV HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib
CMD ["retrain", "--help"]

# --- the default target (last stage): the runtime image unchanged.
FROM runtime AS production
