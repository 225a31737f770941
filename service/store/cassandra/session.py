"""One way to build a driver `Cluster` from a `CassandraConfig`: policies, auth and TLS in one place.

Used by the store and by `mnist db init/status`. A `Cluster` whose first connect fails is shut down by the
driver, so callers that retry build a new one each attempt.
"""

from __future__ import annotations

import ssl

from cassandra import ProtocolVersion
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import (
    DCAwareRoundRobinPolicy,
    ExponentialReconnectionPolicy,
    RetryPolicy,
    TokenAwarePolicy,
)

from service.store.cassandra.url import CassandraConfig


def make_cluster(config: CassandraConfig) -> Cluster:
    """A driver Cluster: token-aware DC-aware routing, the driver's retry and reconnection policies."""
    profile = ExecutionProfile(
        # Token-aware first (a replica coordinates its own writes), round-robin within the local DC.
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=config.dc)),
        retry_policy=RetryPolicy(),
        consistency_level=config.read_consistency,
        request_timeout=config.timeout_s,
    )
    ssl_context = None
    if config.tls:
        ssl_context = ssl.create_default_context(cafile=str(config.tls_ca) if config.tls_ca else None)
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
