"""A cluster on one machine from real parts: N connection servers (``server_proc`` with
``--server-id``), Redis and PostgreSQL (given, or private ones started here) and HAProxy
as the sticky front door (``haproxy.cfg.in``). ``chatlab cluster`` runs one; the cluster
tests, ``chatlab validate --cluster`` and ``benchmarks`` use it too."""

from .components import ComponentFailed, HAProxy, MissingComponent, PrivatePostgres, PrivateRedis
from .local import MAX_SERVERS, ClusterSpec, ClusterTarget, LocalCluster

__all__ = ["MAX_SERVERS", "ClusterSpec", "ClusterTarget", "ComponentFailed", "HAProxy", "LocalCluster", "MissingComponent",
           "PrivatePostgres", "PrivateRedis"]
