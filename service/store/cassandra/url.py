"""`cassandra://user:pass@host1,host2:9042/keyspace?dc=..&consistency=..` -> one typed connection config.

Query parameters (all optional):
  dc                  local datacenter for DCAwareRoundRobinPolicy (default: the first contact point's)
  consistency         read and write consistency level (default LOCAL_QUORUM)
  read_consistency    overrides `consistency` for reads
  write_consistency   overrides `consistency` for writes
  timeout             request timeout in seconds (default 5): a write slower than this goes to the spool
  connect_timeout     seconds per connection attempt (default 5)
  replication         what `mnist db init` creates: `3` (SimpleStrategy, RF 3) or `dc1:3,dc2:3`
                      (NetworkTopologyStrategy, RF per datacenter); default `1`
  tls                 `true` to use TLS with the system CA bundle
  tls_ca              CA bundle (PEM file) that signed the nodes' certificates; implies TLS
  tls_cert, tls_key   client certificate chain and its private key (PEM files), for nodes that require
                      client certificates (mutual TLS); both or neither; imply TLS
Settings override the URL: MNIST_CASSANDRA_USERNAME / _PASSWORD / _TLS_CA / _TLS_CERT / _TLS_KEY / _TTL_S /
_MAX_IN_FLIGHT; a passphrase of the key only comes from MNIST_CASSANDRA_TLS_KEY_PASSWORD (never the URL).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from cassandra import ConsistencyLevel

from service.settings import Settings

DEFAULT_PORT = 9042
KEYSPACE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")
DC_RF_RE = re.compile(r"^[A-Za-z0-9_.\-]+:\d+$")
KNOWN_PARAMS = {
    "dc",
    "consistency",
    "read_consistency",
    "write_consistency",
    "timeout",
    "connect_timeout",
    "replication",
    "tls",
    "tls_ca",
    "tls_cert",
    "tls_key",
}


class BadStoreUrl(ValueError):
    """MNIST_STORE_URL is not a usable cassandra:// URL; the message says what is wrong."""


@dataclass(frozen=True)
class Replication:
    """Keyspace replication: SimpleStrategy with one RF, or NetworkTopologyStrategy with an RF per DC."""

    factor: int = 1
    per_dc: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Replication:
        """`3` -> SimpleStrategy RF 3; `dc1:3,dc2:2` -> NetworkTopologyStrategy."""
        text = text.strip()
        if text.isdigit() and int(text) >= 1:
            return cls(factor=int(text))
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if parts and all(DC_RF_RE.match(p) for p in parts):
            per_dc = {dc: int(rf) for dc, rf in (p.rsplit(":", 1) for p in parts)}
            if all(rf >= 1 for rf in per_dc.values()):
                return cls(per_dc=per_dc)
        raise BadStoreUrl(
            f"replication={text!r}: use a replication factor (e.g. 3) or per-datacenter factors (dc1:3,dc2:3)"
        )

    def cql(self) -> str:
        """The CQL map literal for `CREATE KEYSPACE ... WITH replication = ...`."""
        if self.per_dc:
            dcs = ", ".join(f"'{dc}': {rf}" for dc, rf in sorted(self.per_dc.items()))
            return f"{{'class': 'NetworkTopologyStrategy', {dcs}}}"
        return f"{{'class': 'SimpleStrategy', 'replication_factor': {self.factor}}}"


@dataclass(frozen=True)
class CassandraConfig:
    """Everything needed to connect to Cassandra and write predictions there."""

    hosts: tuple[str, ...]
    keyspace: str
    port: int = DEFAULT_PORT
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    dc: str | None = None
    read_consistency: int = ConsistencyLevel.LOCAL_QUORUM
    write_consistency: int = ConsistencyLevel.LOCAL_QUORUM
    timeout_s: float = 5.0
    connect_timeout_s: float = 5.0
    replication: Replication = field(default_factory=Replication)
    tls: bool = False
    tls_ca: Path | None = None
    tls_cert: Path | None = None  # client certificate chain (mutual TLS)
    tls_key: Path | None = None
    tls_key_password: str | None = field(default=None, repr=False)
    ttl_s: int = 0
    max_in_flight: int = 64
    spool_dir: Path = Path("var/spool")
    spool_max_bytes: int = 1_073_741_824

    @property
    def endpoint(self) -> str:
        """Where this config points, without credentials (for logs and status)."""
        return f"{','.join(self.hosts)}:{self.port}/{self.keyspace}"

    @classmethod
    def from_settings(cls, settings: Settings, url: str | None = None) -> CassandraConfig:
        """The URL (default: MNIST_STORE_URL) with the MNIST_CASSANDRA_* settings applied on top."""
        config = parse_url(url or settings.store_url)
        password, key_password = settings.cassandra_password, settings.cassandra_tls_key_password
        config = replace(
            config,
            username=settings.cassandra_username or config.username,
            password=password.get_secret_value() if password else config.password,
            tls_ca=settings.cassandra_tls_ca or config.tls_ca,
            tls_cert=settings.cassandra_tls_cert or config.tls_cert,
            tls_key=settings.cassandra_tls_key or config.tls_key,
            tls_key_password=key_password.get_secret_value() if key_password else None,
            ttl_s=settings.cassandra_ttl_s,
            max_in_flight=settings.cassandra_max_in_flight,
            spool_dir=settings.spool_dir,
            spool_max_bytes=settings.spool_max_bytes,
        )
        _check_client_certificate(config.tls_cert, config.tls_key, "MNIST_CASSANDRA_TLS_CERT / _TLS_KEY")
        return replace(config, tls=config.tls or any((config.tls_ca, config.tls_cert)))


def _check_client_certificate(cert: Path | None, key: Path | None, names: str) -> None:
    if (cert is None) != (key is None):
        given, absent = ("certificate", "key") if key is None else ("key", "certificate")
        raise BadStoreUrl(
            f"a TLS client {given} without its {absent} ({names}): mutual TLS needs both PEM files"
        )


def _path(name: str, value: str) -> Path:
    if not value.strip():
        raise BadStoreUrl(f"{name}= names no file; give the path of a PEM file")
    return Path(unquote(value.strip()))


def _consistency(name: str, value: str) -> int:
    level = ConsistencyLevel.name_to_value.get(value.strip().upper())
    if level is None:
        names = ", ".join(sorted(ConsistencyLevel.name_to_value))
        raise BadStoreUrl(f"{name}={value!r} is not a consistency level; use one of {names}")
    return int(level)


def _seconds(name: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 600:
        raise BadStoreUrl(f"{name}={value!r}: give seconds between 0 and 600")
    return seconds


def redacted(url: str) -> str:
    """The URL with its password replaced by ***, for messages and logs."""
    parts = urlsplit(url)
    userinfo, at, hostinfo = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:***@{hostinfo}").geturl()


def parse_url(url: str) -> CassandraConfig:
    """Parse a cassandra:// URL; raises BadStoreUrl naming the faulty part."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "cassandra":
        raise BadStoreUrl(f"{redacted(url)!r}: not a cassandra:// URL")
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, _, secret = userinfo.partition(":")
        username, password = unquote(user) or None, unquote(secret) or None
    port = DEFAULT_PORT
    head, sep, tail = hostinfo.rpartition(":")
    if sep and tail.isdigit():
        hostinfo, port = head, int(tail)
    elif sep and tail:
        raise BadStoreUrl(f"cassandra URL: port {tail!r} is not a number")
    hosts = tuple(h.strip() for h in hostinfo.split(",") if h.strip())
    if not hosts:
        raise BadStoreUrl(
            "cassandra URL names no host; e.g. cassandra://user:pass@cassandra-0,cassandra-1:9042/mnist"
        )
    if not 1 <= port <= 65535:
        raise BadStoreUrl(f"cassandra URL: port {port} is out of range")
    keyspace = parts.path.strip("/")
    if not KEYSPACE_RE.match(keyspace):
        raise BadStoreUrl(
            f"cassandra URL: keyspace {keyspace!r} must start with a letter and hold only letters, digits "
            "and _ (at most 48), e.g. cassandra://host:9042/mnist"
        )
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = sorted(set(query) - KNOWN_PARAMS)
    if unknown:
        raise BadStoreUrl(
            f"cassandra URL: unknown parameter(s) {', '.join(unknown)}; known: {sorted(KNOWN_PARAMS)}"
        )
    tls_files = {
        name: _path(name, query[name]) for name in ("tls_ca", "tls_cert", "tls_key") if name in query
    }
    _check_client_certificate(tls_files.get("tls_cert"), tls_files.get("tls_key"), "tls_cert / tls_key")
    both = _consistency("consistency", query["consistency"]) if "consistency" in query else None
    default = int(ConsistencyLevel.LOCAL_QUORUM)
    return CassandraConfig(
        hosts=hosts,
        port=port,
        keyspace=keyspace,
        username=username,
        password=password,
        dc=query.get("dc") or None,
        read_consistency=_consistency("read_consistency", query["read_consistency"])
        if "read_consistency" in query
        else (both if both is not None else default),
        write_consistency=_consistency("write_consistency", query["write_consistency"])
        if "write_consistency" in query
        else (both if both is not None else default),
        timeout_s=_seconds("timeout", query["timeout"]) if "timeout" in query else 5.0,
        connect_timeout_s=_seconds("connect_timeout", query["connect_timeout"])
        if "connect_timeout" in query
        else 5.0,
        replication=Replication.parse(query["replication"]) if "replication" in query else Replication(),
        tls=query.get("tls", "").lower() in {"1", "true", "yes"} or bool(tls_files),
        tls_ca=tls_files.get("tls_ca"),
        tls_cert=tls_files.get("tls_cert"),
        tls_key=tls_files.get("tls_key"),
    )
