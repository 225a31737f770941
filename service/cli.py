"""The `mnist` command. Each subcommand imports its heavy modules lazily, so `mnist --help` is instant."""

from __future__ import annotations

import click

from service import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mnist")
def main() -> None:
    """Train, evaluate and serve MNIST digit models; manage the prediction store."""


@main.group()
def db() -> None:
    """Prediction store administration (Cassandra keyspace and tables)."""
