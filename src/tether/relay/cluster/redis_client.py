"""The cluster's Redis: ``--cluster`` URLs → a redis-py asyncio client, a single server or Redis
Cluster (asked of the server, so one seed is enough for either)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from tether.errors import ConfigError, UsageError
from tether.relay.cluster.settings import shown

Client = Redis | RedisCluster

#: What redis-py raises when Redis cannot do what was asked: its errors, the socket's, and a Redis
#: Cluster it cannot map (``RedisClusterException`` is not a ``RedisError``: a master restarting
#: during a topology refresh raised it past every ``except RedisError`` and ended the bus).
TROUBLE: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError)
# a reply within this, or the server counts as unreachable (the relay then refuses cross-node
# channels and says so, and /healthz reports it)
TIMEOUT = 2.0


async def connect(seeds: list[str]) -> Client:
    """A client for the cluster's Redis: Redis Cluster when the server says it is one."""
    options: dict[str, Any] = {"socket_timeout": TIMEOUT, "socket_connect_timeout": TIMEOUT}
    first = Redis.from_url(seeds[0], **options)
    try:
        info = await first.info("cluster")
    except RedisError as exc:
        await first.aclose()
        raise ConfigError(f"cannot reach Redis at {shown(seeds[0])}: {exc}",
                          hint="start redis-server, or pass the right --cluster URL") from None
    if not info.get("cluster_enabled"):
        if len(seeds) > 1:
            await first.aclose()
            raise UsageError("several --cluster URLs name the seeds of a Redis Cluster, but "
                             f"{shown(seeds[0])} is a single server", hint="pass one URL")
        return first
    await first.aclose()
    nodes = [ClusterNode(urlsplit(s).hostname or "", urlsplit(s).port or 6379) for s in seeds]
    parts = urlsplit(seeds[0])
    return RedisCluster(startup_nodes=nodes, username=parts.username, password=parts.password,
                        ssl=parts.scheme == "rediss", **options)
