"""The `mnist` command. Each subcommand imports its heavy modules lazily, so `mnist --help` is instant."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from service import __version__

if TYPE_CHECKING:
    from service.store.cassandra.url import CassandraConfig


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mnist")
def main() -> None:
    """Train, evaluate and serve MNIST digit models; manage the prediction store."""


_data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder with the four MNIST *-ubyte.gz files [default: MNIST_DATA_DIR or data/mnist].",
)


@main.command()
@_data_dir_option
def download(data_dir: Path | None) -> None:
    """Download the four MNIST files (checksum-verified) into the data folder."""
    from service.download import download_mnist
    from service.errors import DataError
    from service.settings import Settings

    target = data_dir or Settings().data_dir
    try:
        download_mnist(target)
    except DataError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"MNIST files verified in {target}")


@main.command()
@click.option("--model", "name", type=click.Choice(["softmax", "cnn"]), required=True, help="Architecture.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override the recipe's epochs.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Override the batch size.")
@click.option("--seed", type=int, default=42, show_default=True, help="Seeds every random choice.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Model folder [default: MNIST_MODEL_DIR or models].")  # fmt: skip
@_data_dir_option
@click.option("--download", "fetch", is_flag=True, help="Download the MNIST files first if missing.")
@click.option("--limit", type=click.IntRange(min=1), default=None, hidden=True,
              help="Train on the first N images only (tests).")  # fmt: skip
def train(
    name: str,
    epochs: int | None,
    batch_size: int | None,
    seed: int,
    out: Path | None,
    data_dir: Path | None,
    fetch: bool,
    limit: int | None,
) -> None:
    """Train a model and write models/<name>/<next version>/ (model, TFLite export, metadata, plots)."""
    import logging
    import shlex
    import sys

    from service.errors import DataError
    from service.settings import Settings

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = Settings()
    data_dir = data_dir or settings.data_dir
    try:
        if fetch:
            from service.download import download_mnist

            download_mnist(data_dir)
        from service.train import train as run_training

        artifact = run_training(
            name,
            data_dir=data_dir,
            out_dir=out or settings.model_dir,
            seed=seed,
            epochs=epochs,
            batch_size=batch_size,
            limit=limit,
            command=shlex.join(["mnist", *sys.argv[1:]]),
        )
    except DataError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"{artifact.path}: test accuracy {artifact.accuracy:.2%} "
        f"in {artifact.metadata['training_seconds']:.0f} s of training"
    )


@main.command()
@click.option(
    "--model", "name", type=click.Choice(["softmax", "cnn"]), required=True, help="Model to retrain."
)
@click.option("--from", "store_url", required=True, metavar="STORE_URL",
              help="Store with the feedback: sqlite:///path or cassandra://host/keyspace.")  # fmt: skip
@click.option("--model-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Model folder to start from and write to [MNIST_MODEL_DIR].")  # fmt: skip
@_data_dir_option
@click.option(
    "--seed", type=int, default=42, show_default=True, help="Seeds the slice, the batches, the weights."
)
@click.option(
    "--epochs", type=click.IntRange(min=1), default=3, show_default=True, help="Epochs (progress bar each)."
)
@click.option(
    "--steps-per-epoch", type=click.IntRange(min=1), default=100, show_default=True, help="Steps per epoch."
)
@click.option(
    "--batch-size", type=click.IntRange(min=2), default=64, show_default=True, help="Images per step."
)
@click.option("--holdout", type=click.FloatRange(0.05, 0.9), default=0.2, show_default=True,
              help="Share of the feedback kept as the evaluation slice.")  # fmt: skip
@click.option("--feedback-share", type=click.FloatRange(0.0, 1.0), default=0.25, show_default=True,
              help="Share of each batch drawn from the feedback (the rest from MNIST).")  # fmt: skip
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True,
              help="AdamW learning rate of the fine-tune.")  # fmt: skip
@click.option("--min-feedback", type=click.IntRange(min=2), default=50, show_default=True,
              help="Refuse to run with fewer labelled predictions.")  # fmt: skip
@click.option(
    "--shuffle-labels", is_flag=True, hidden=True, help="Scramble feedback labels (tests the gate)."
)
def retrain(
    name: str,
    store_url: str,
    model_dir: Path | None,
    data_dir: Path | None,
    seed: int,
    epochs: int,
    steps_per_epoch: int,
    batch_size: int,
    holdout: float,
    feedback_share: float,
    learning_rate: float,
    min_feedback: int,
    shuffle_labels: bool,
) -> None:
    """Fine-tune the serving version on MNIST plus the store's feedback; write the next version, servable
    only if it passes the promotion gate (else marked rejected with the reason)."""
    import logging
    import shlex
    import sys

    from service.errors import DataError
    from service.retrain import RetrainError, RetrainOptions, retrain
    from service.settings import Settings
    from service.store.factory import open_store
    from service.train import TrainingError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    defaults = Settings()
    settings = Settings(store_url=store_url)
    options = RetrainOptions(
        steps_per_epoch=steps_per_epoch, epochs=epochs, batch_size=batch_size, holdout=holdout, seed=seed,
        feedback_share=feedback_share, learning_rate=learning_rate, min_feedback=min_feedback,
        shuffle_labels=shuffle_labels,
    )  # fmt: skip
    store = open_store(settings)
    try:
        outcome = retrain(
            name,
            store,
            model_dir=model_dir or defaults.model_dir,
            data_dir=data_dir or defaults.data_dir,
            options=options,
            command=shlex.join(["mnist", *sys.argv[1:]]),
        )
    except (RetrainError, DataError, TrainingError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    meta, serving = outcome.artifact.metadata, outcome.artifact.metadata["serving"]
    click.echo(
        f"{name} v{outcome.artifact.version} ({'servable' if outcome.servable else 'REJECTED'}): "
        f"MNIST test {meta['test_accuracy']:.4f} (serving v{serving['version']}: "
        f"{serving['test_accuracy']:.4f}), feedback slice {meta['feedback_slice_accuracy']:.4f} (serving: "
        f"{serving['feedback_slice_accuracy']:.4f}) on {meta['feedback']['evaluation_slice']} held-back "
        f"labels; {outcome.reason}"
    )


@main.command()
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_data_dir_option
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True, help="LiteRT threads.")
def evaluate(path: Path, data_dir: Path | None, threads: int) -> None:
    """Re-measure an artifact's model.tflite on the 10k test set; exit 1 below its threshold."""
    from service.artifacts import ArtifactError
    from service.errors import DataError
    from service.evaluate import evaluate_artifact, report
    from service.settings import Settings

    try:
        result = evaluate_artifact(path, data_dir or Settings().data_dir, threads=threads)
    except (ArtifactError, DataError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(report(result))
    if not result.passed:
        raise SystemExit(1)


@main.command()
@click.option("--host", default=None, help="Bind address [default: MNIST_HOST or 127.0.0.1].")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="Port [default: MNIST_PORT or 8000]."
)
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Worker processes [MNIST_WORKERS].")
@click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="Threads per worker [MNIST_THREADS]."
)
def serve(host: str | None, port: int | None, workers: int | None, threads: int | None) -> None:
    """Serve the models under gunicorn (configuration from MNIST_* variables; see docs/configuration.md)."""
    import os
    import sys

    from pydantic import ValidationError

    from service.settings import Settings

    overrides = {"MNIST_HOST": host, "MNIST_PORT": port, "MNIST_WORKERS": workers, "MNIST_THREADS": threads}
    os.environ.update({key: str(value) for key, value in overrides.items() if value is not None})
    from service.lifecycle.checks import scan

    # Fail here, with a message that says what to do, rather than in every worker. Only the folders are
    # looked at: a broken version is the workers' to refuse (counted, logged) while an older one serves.
    try:
        settings = Settings()
    except ValidationError as exc:
        raise click.ClickException(f"invalid configuration:\n{exc}") from None
    found = scan(settings.model_dir)
    if settings.default_model not in found:
        raise click.ClickException(
            f"no {settings.default_model!r} model under {settings.model_dir.resolve()} (found: "
            f"{', '.join(sorted(found)) or 'none'}); train it with `make train` or set MNIST_DEFAULT_MODEL"
        )
    # exec: gunicorn's arbiter becomes this process, so SIGTERM from a supervisor reaches it directly.
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "python:service.gunicorn_conf",
        "service.app:create_app()",
    ]
    os.execv(sys.executable, argv)


@main.command()
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--model", default=None, help="Model name [default: MNIST_DEFAULT_MODEL].")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file.")
def predict(files: tuple[Path, ...], model: str | None, as_json: bool) -> None:
    """Classify image files with the local models (no server needed)."""
    import json

    from service.errors import ServiceError
    from service.inference import ModelRegistry
    from service.preprocess import preprocess
    from service.settings import Settings

    settings = Settings()
    registry = ModelRegistry.load(settings)
    failed = False
    try:
        served = registry.get(model)
        for path in files:
            try:
                image = preprocess(
                    path.read_bytes(),
                    max_bytes=settings.max_upload_bytes,
                    max_pixels=settings.max_image_pixels,
                ).array
            except ServiceError as exc:
                failed = True
                click.echo(f"{path}: {exc.message}", err=True)
                continue
            probabilities = served.predict(image[None])[0]
            digit = int(probabilities.argmax())
            if as_json:
                click.echo(json.dumps({
                    "file": str(path), "model": served.name, "version": served.version, "digit": digit,
                    "confidence": float(probabilities[digit]), "probabilities": probabilities.tolist(),
                }))  # fmt: skip
            else:
                click.echo(f"{path}: {digit} ({probabilities[digit]:.1%}, {served.name} v{served.version})")
    except ServiceError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        registry.close()
    if failed:
        raise SystemExit(1)


@main.group()
def db() -> None:
    """Prediction store administration (Cassandra keyspace and tables)."""


_url_option = click.option("--url", default=None, help="Store URL [default: MNIST_STORE_URL].")


def _cassandra_config(url: str | None) -> CassandraConfig | None:
    """The Cassandra config from --url or the settings; None (with a note) for a SQLite URL."""
    from service.settings import Settings
    from service.store.cassandra.url import BadStoreUrl, CassandraConfig

    settings = Settings()
    url = url or settings.store_url
    if url.startswith("sqlite:"):
        click.echo(f"{url}: SQLite creates its schema when the service opens the file; nothing to do")
        return None
    try:
        return CassandraConfig.from_settings(settings, url)
    except BadStoreUrl as exc:
        raise click.ClickException(str(exc)) from None


@db.command("init")
@_url_option
@click.option("--replication", default=None,
              help="RF (SimpleStrategy), e.g. 3, or per-DC RFs (NetworkTopologyStrategy), e.g. dc1:3,dc2:3 "
                   "[default: the URL's replication=, else 1].")  # fmt: skip
@click.option("--timeout", type=click.FloatRange(min=1), default=300, show_default=True,
              help="Seconds to wait for Cassandra to accept connections.")  # fmt: skip
@click.option("--print", "print_only", is_flag=True, help="Print the CQL instead of running it.")
def db_init(url: str | None, replication: str | None, timeout: float, print_only: bool) -> None:
    """Create the keyspace and tables (idempotent; safe from many pods at once) and wait for agreement."""
    from service.db import DbError, init
    from service.store.cassandra.schema import statements
    from service.store.cassandra.url import BadStoreUrl, Replication

    config = _cassandra_config(url)
    if config is None:
        return
    try:
        chosen = Replication.parse(replication) if replication else config.replication
    except BadStoreUrl as exc:
        raise click.BadParameter(str(exc), param_hint="--replication") from None
    if print_only:
        click.echo("\n".join(f"{stmt};" for stmt in statements(config.keyspace, chosen)))
        return
    try:
        init(config, chosen, timeout_s=timeout, progress=lambda m: click.echo(f"db init: {m}", err=True))
    except DbError as exc:
        raise click.ClickException(str(exc)) from None


@db.command("status")
@_url_option
@click.option("--timeout", type=click.FloatRange(min=1), default=10, show_default=True,
              help="Seconds to wait for a connection.")  # fmt: skip
def db_status(url: str | None, timeout: float) -> None:
    """Connectivity, schema version and row counts; exits 1 when Cassandra is unreachable or has no schema."""
    from service.db import DbError, status

    config = _cassandra_config(url)
    if config is None:
        return
    try:
        result = status(config, timeout_s=timeout)
    except DbError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("\n".join(result.lines()))
    if not result.reachable or result.schema_version is None:
        raise SystemExit(1)
