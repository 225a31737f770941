"""One way to build a driver `Cluster` from a `CassandraConfig`: policies, auth and TLS in one place.

Used by the store and by `mnist db init/status`. A `Cluster` whose first connect fails is shut down by the
driver, so callers that retry build a new one each attempt.
"""

from __future__ import annotations

import ssl

from cassandra import ProtocolVersion
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable
from cassandra.policies import (
    DCAwareRoundRobinPolicy,
    ExponentialReconnectionPolicy,
    RetryPolicy,
    TokenAwarePolicy,
)

from service.store.cassandra.url import CassandraConfig


class TlsSetupError(ValueError):
    """A TLS file cannot be used (missing, unreadable, not PEM, wrong passphrase); the message says which.

    Raised before any connection: retrying cannot help, and the message never quotes a file's content.
    """


def tls_context(config: CassandraConfig) -> ssl.SSLContext:
    """Verify the nodes against the CA bundle (else the system's); present the client certificate if set."""
    try:
        context = ssl.create_default_context(cafile=str(config.tls_ca) if config.tls_ca else None)
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(
            f"the CA bundle {config.tls_ca} (MNIST_CASSANDRA_TLS_CA, URL tls_ca) cannot be used: {_why(exc)}"
        ) from None
    if config.tls_cert is not None:
        try:
            context.load_cert_chain(config.tls_cert, config.tls_key, password=config.tls_key_password)
        except (OSError, ssl.SSLError) as exc:
            raise TlsSetupError(
                f"the client certificate {config.tls_cert} with key {config.tls_key} "
                f"(MNIST_CASSANDRA_TLS_CERT / _KEY / _KEY_PASSWORD, URL tls_cert / tls_key) cannot be used: "
                f"{_why(exc)}"
            ) from None
    return context


def _why(exc: OSError) -> str:
    # The OpenSSL reason (e.g. KEY_VALUES_MISMATCH, BAD_DECRYPT) or the errno text; never the file's content.
    if isinstance(exc, ssl.SSLError):
        return f"{exc.library or 'SSL'} {exc.reason or exc}"
    return f"{type(exc).__name__}: {exc.strerror or exc}"


def tls_refusal(exc: NoHostAvailable, config: CassandraConfig) -> str | None:
    """What went wrong when TLS itself failed (no client certificate, one the nodes do not trust, a node
    certificate this client does not trust); None when no host failed in TLS. Such a failure does not pass
    with time, so callers stop retrying and say this."""
    # The driver passes handshake errors on as they are, or inside an OSError of its own that quotes them.
    failures = [e for e in exc.errors.values() if isinstance(e, ssl.SSLError) or "[SSL:" in str(e)]
    if not failures:
        return None
    reason = "; ".join(sorted({_tls_reason(e) for e in failures}))
    where = f"Cassandra at {config.endpoint}"
    if "CERTIFICATE_VERIFY_FAILED" in reason:
        return (
            f"this client does not trust the TLS certificate of {where}: it is not signed by "
            f"{f'the CA bundle {config.tls_ca}' if config.tls_ca else 'a CA of the system'} "
            f"(MNIST_CASSANDRA_TLS_CA, URL tls_ca) ({reason})"
        )
    if "WRONG_VERSION_NUMBER" in reason:
        return f"{where} does not answer TLS on this port: drop tls / tls_ca, or use its TLS port ({reason})"
    if config.tls_cert is None:
        return (
            f"{where} refused this client's TLS connection: it requires a client certificate; set "
            f"MNIST_CASSANDRA_TLS_CERT and MNIST_CASSANDRA_TLS_KEY (URL tls_cert and tls_key) to one its CA "
            f"signed ({reason})"
        )
    return (
        f"{where} refused this client's TLS connection with the client certificate {config.tls_cert}: is it "
        f"signed by a CA the nodes trust, and valid today? ({reason})"
    )


def _tls_reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    text = str(exc)
    return text[text.find("[SSL:") :] if "[SSL:" in text else text


def make_cluster(config: CassandraConfig) -> Cluster:
    """A driver Cluster: token-aware DC-aware routing, the driver's retry and reconnection policies."""
    profile = ExecutionProfile(
        # Token-aware first (a replica coordinates its own writes), round-robin within the local DC.
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=config.dc)),
        retry_policy=RetryPolicy(),
        consistency_level=config.read_consistency,
        request_timeout=config.timeout_s,
    )
    ssl_context = tls_context(config) if config.tls else None
    auth = PlainTextAuthProvider(config.username, config.password or "") if config.username else None
    return Cluster(
        contact_points=list(config.hosts),
        port=config.port,
        # Cassandra 4.0 and later speak v5; naming it skips the driver's downgrade probing on every connect.
        protocol_version=ProtocolVersion.V5,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        auth_provider=auth,
        ssl_context=ssl_context,
        # Back within seconds after an outage: 0.5 s, 1 s, 2 s, ... capped at 5 s between attempts.
        reconnection_policy=ExponentialReconnectionPolicy(base_delay=0.5, max_delay=5.0),
        connect_timeout=config.connect_timeout_s,
        control_connection_timeout=config.connect_timeout_s,
        # Notice a node that stopped answering (not just one that closed its sockets) within ~10 s.
        idle_heartbeat_interval=5,
        idle_heartbeat_timeout=5,
    )
