"""Open the configured prediction store from `MNIST_STORE_URL`: the only place that knows every backend."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from service.settings import Settings
from service.store.base import Store
from service.store.spool import Spool
from service.store.spooled import SpooledStore

if TYPE_CHECKING:  # the driver is imported only when a Cassandra store is opened
    from service.store.cassandra.store import CassandraStore
    from service.store.cassandra.url import CassandraConfig


class UnsupportedStore(ValueError):
    """MNIST_STORE_URL names a scheme no backend handles, or is malformed."""


def sqlite_path(url: str) -> Path:
    """`sqlite:///var/p.db` -> `var/p.db` (relative), `sqlite:////srv/p.db` -> `/srv/p.db` (absolute)."""
    parts = urlsplit(url)
    if parts.netloc:
        raise UnsupportedStore(
            f"{url!r}: a sqlite URL has no host; use sqlite:///relative or sqlite:////absolute"
        )
    path = parts.path[1:]  # the third slash separates the (empty) host from the path
    if not path:
        raise UnsupportedStore(f"{url!r}: no database file; e.g. sqlite:///var/predictions.db")
    return Path(path)


def open_store(settings: Settings) -> Store:
    """The store MNIST_STORE_URL points at, opened (schema created) and ready for writes."""
    url = settings.store_url
    scheme = urlsplit(url).scheme.lower()
    if scheme == "sqlite":
        from service.store.sqlite import SqliteStore

        return SqliteStore(sqlite_path(url))
    if scheme == "cassandra":
        from service.store.cassandra.url import BadStoreUrl, CassandraConfig

        try:
            config = CassandraConfig.from_settings(settings)
        except BadStoreUrl as exc:
            raise UnsupportedStore(f"MNIST_STORE_URL: {exc}") from exc
        return spooled_cassandra(config)
    from service.store.cassandra.url import redacted

    raise UnsupportedStore(
        f"MNIST_STORE_URL={redacted(url)!r}: unsupported scheme {scheme!r}; use sqlite:///path or cassandra://host/keyspace"
    )


def spooled_cassandra(config: CassandraConfig, *, create_schema: bool = True) -> SpooledStore[CassandraStore]:
    """Cassandra behind the local spool (config.spool_dir): an outage of the cluster costs no records."""
    from service.store.cassandra.store import CassandraStore

    spool = Spool(config.spool_dir, config.spool_max_bytes)  # first: an unusable spool dir fails at once
    return SpooledStore(CassandraStore(config, create_schema=create_schema), spool)
