"""Which Redis a pod talks to, and how: one server, a master found through Sentinel, or a
Redis Cluster; the one place that knows the difference.

The rest of the backend is written once for all three: keys carry hash tags so each
script and transaction stays in one slot (``keys.py``), and the three things that do
differ are here: how a client is made, how a pod publishes (``PUBLISH``, or ``SPUBLISH``
on a cluster, so pub/sub grows with the shards instead of every message crossing every
shard), and which master(s) a client writes to at the moment (a change is a failover).

Sentinel: every new connection asks the sentinels for the master, and a connection to a
master that was demoted fails (``READONLY`` becomes a connection error): a failover is
an outage of a few seconds the pod recovers from without a restart (``health.py``).
Cluster: redis-py follows ``MOVED``/``ASK`` and refreshes the slot map itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.cluster import ClusterNode as SyncClusterNode
from redis.cluster import RedisCluster as SyncRedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.sentinel import Sentinel as SyncSentinel

from tunnel_broker.backend.redis.connection import POOL_SIZE, TrimmedPool
from tunnel_broker.errors import SettingsError

if TYPE_CHECKING:
    from tunnel_broker.config import Settings

# A client of any topology: the backend only uses commands all of them have.
AnyRedis = aioredis.Redis | RedisCluster
# Above the calls a pod makes at once (``BoundedCluster``): a node's pool never fills.
CLUSTER_CONNECTIONS_PER_NODE = 2 * POOL_SIZE


class TrimmedSentinelPool(SentinelConnectionPool, TrimmedPool):
    """The pod's bounded, trimmed pool (``connection.py``) whose connections go to
    whichever server the sentinels name master."""


class BoundedCluster(RedisCluster):
    """A cluster client whose calls wait their turn, as the pod's blocking pool makes
    them do on one server (``connection.py``).

    redis-py's cluster client keeps a pool per node that *raises* ``MaxConnectionsError``
    once full: a burst of closing tunnels (300 on a pod, in ``bench/cluster_bench.py``)
    made every pod take Redis for unreachable, unready for seconds. Here at most
    ``turns`` calls (a command, a script or a pipeline) are under way at once, each using
    at most one connection per node, so no node's pool fills; a call that waits longer
    than ``wait`` fails as a connection error, like the blocking pool's."""

    def __init__(self, *args: Any, turns: int = POOL_SIZE, wait: float = 5.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._turns = asyncio.Semaphore(turns)
        self._wait = wait

    async def take_turn(self) -> None:
        try:
            async with asyncio.timeout(self._wait):
                await self._turns.acquire()
        except TimeoutError:
            raise RedisConnectionError(f"no turn for a redis call within {self._wait} s") from None

    def end_turn(self) -> None:
        self._turns.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        await self.take_turn()
        try:
            return await super().execute_command(*args, **kwargs)
        finally:
            self.end_turn()

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> ClusterPipeline:
        super().pipeline(transaction, shard_hint)  # its checks
        return BoundedPipeline(self, transaction)  # type: ignore[abstract]


class BoundedPipeline(ClusterPipeline):
    """A pipeline is one call: it waits for a turn of its client (``BoundedCluster``)."""

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        client = self.cluster_client
        assert isinstance(client, BoundedCluster)
        await client.take_turn()
        try:
            return await super().execute(raise_on_error, allow_redirections)
        finally:
            client.end_turn()


def _addresses(raw: str, source: str) -> tuple[tuple[str, int], ...]:
    found = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(f"{source}: {item!r} is not host:port")
        found.append((host.strip("[]"), int(port)))
    return tuple(found)


@dataclass(frozen=True)
class RedisTopology:
    kind: str = "standalone"
    url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str = "mymaster"
    sentinel_username: str = ""
    sentinel_password: str = field(default="", repr=False)
    sentinel_tls: bool = False
    cluster_nodes: tuple[tuple[str, int], ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisTopology:
        """Raises ``SettingsError`` for settings no client could be made from."""
        url = settings.redis_url.reveal()
        if not url.startswith(("redis://", "rediss://")):
            raise SettingsError("TB_REDIS_URL: expected a redis:// or rediss:// URL")
        topology = cls(
            kind=settings.redis_topology,
            url=url,
            sentinels=_addresses(settings.redis_sentinels, "TB_REDIS_SENTINELS"),
            master_name=settings.redis_sentinel_master,
            sentinel_username=settings.redis_sentinel_username,
            sentinel_password=settings.redis_sentinel_password.reveal(),
            sentinel_tls=settings.redis_sentinel_tls,
            cluster_nodes=_addresses(settings.redis_cluster_nodes, "TB_REDIS_CLUSTER_NODES"),
        )
        if topology.kind == "sentinel":
            if not topology.sentinels:
                raise SettingsError("TB_REDIS_SENTINELS: sentinel topology needs sentinels")
            if not topology.master_name:
                raise SettingsError("TB_REDIS_SENTINEL_MASTER: sentinel topology needs a name")
        if topology.kind == "cluster" and _url_kwargs(url).get("db", 0):
            raise SettingsError("TB_REDIS_URL: a Redis Cluster has database 0 only")
        return topology

    @classmethod
    def standalone(cls, url: str) -> RedisTopology:
        return cls(url=url)

    @property
    def sharded(self) -> bool:
        """Whether pub/sub is per shard (``SPUBLISH``/``SSUBSCRIBE``)."""
        return self.kind == "cluster"

    def describe(self) -> str:
        """For logs: where, never credentials."""
        if self.kind == "sentinel":
            where = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            return f"sentinel master {self.master_name!r} via {where}"
        kwargs = _url_kwargs(self.url)
        return f"{self.kind} {kwargs.get('host', '?')}:{kwargs.get('port', 6379)}"

    # ---- clients -----------------------------------------------------------------------

    def client(self, timeout: float, pool_size: int, *, blocking_reads: bool = False) -> Any:
        """An asyncio client: ``timeout`` bounds connecting, each reply (unless
        ``blocking_reads``, for a pub/sub reader) and the wait for a free connection."""
        read_timeout = None if blocking_reads else timeout
        common: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": read_timeout,
            "socket_connect_timeout": timeout,
            "socket_keepalive": True,
        }
        if self.kind == "cluster":
            seeds = [ClusterNode(host, port) for host, port in self.cluster_nodes]
            return BoundedCluster.from_url(
                self.url,
                startup_nodes=seeds or None,
                max_connections=CLUSTER_CONNECTIONS_PER_NODE,
                turns=pool_size,
                wait=timeout,
                **common,
            )
        if self.kind == "sentinel":
            return self._sentinel(Sentinel, timeout).master_for(
                self.master_name,
                redis_class=aioredis.Redis,
                connection_pool_class=TrimmedSentinelPool,
                max_connections=pool_size,
                timeout=timeout,
                **_master_kwargs(self.url),
                **common,
            )
        pool = TrimmedPool.from_url(
            self.url, max_connections=pool_size, timeout=timeout, retry_on_timeout=False, **common
        )
        return aioredis.Redis(connection_pool=pool)

    def pod_clients(self, lease_seconds: float) -> tuple[Any, Any]:
        """(the client for everything, the client renewing the lease: ``connection.py``)."""
        timeout = max(1.0, lease_seconds / 3)
        return self.client(timeout, POOL_SIZE), self.client(timeout, 2)

    @staticmethod
    async def close(client: Any) -> None:
        """Close a client made here and its connections."""
        if isinstance(client, RedisCluster):
            await client.aclose()
        else:
            await client.aclose(close_connection_pool=True)

    def sync_client(self, timeout: float = 5.0) -> Any:
        """A blocking client, for the CLI."""
        common: dict[str, Any] = {"decode_responses": True, "socket_timeout": timeout}
        if self.kind == "cluster":
            seeds = [SyncClusterNode(h, p) for h, p in self.cluster_nodes]  # type: ignore[no-untyped-call]
            return SyncRedisCluster.from_url(self.url, startup_nodes=seeds or None, **common)
        if self.kind == "sentinel":
            return self._sentinel(SyncSentinel, timeout).master_for(
                self.master_name, redis_class=redis.Redis, **_master_kwargs(self.url), **common
            )
        return redis.Redis.from_url(self.url, **common)

    def _sentinel(self, sentinel_class: Any, timeout: float) -> Any:
        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "decode_responses": True,
        }
        if self.sentinel_username:
            sentinel_kwargs["username"] = self.sentinel_username
        if self.sentinel_password:
            sentinel_kwargs["password"] = self.sentinel_password
        if self.sentinel_tls:
            sentinel_kwargs["ssl"] = True
        return sentinel_class(list(self.sentinels), sentinel_kwargs=sentinel_kwargs)

    # ---- what differs at run time ------------------------------------------------------

    def publish(self, client: Any, channel: str, data: str) -> Awaitable[int]:
        """Publish on this topology's kind of channel; the number of pods that heard it."""
        if self.sharded:
            return cast(Awaitable[int], client.spublish(channel, data))
        return cast(Awaitable[int], client.publish(channel, data))

    def publish_sync(self, client: Any, channel: str, data: str) -> int:
        if self.sharded:
            return int(client.spublish(channel, data))
        return int(client.publish(channel, data))

    def masters(self, client: Any) -> frozenset[str]:
        """The master(s) ``client`` writes to as far as it knows (no call to Redis): a
        change between two looks is a failover."""
        if isinstance(client, RedisCluster):
            return frozenset(node.name for node in client.get_primaries())
        pool = client.connection_pool
        if isinstance(pool, SentinelConnectionPool):
            address = pool.master_address
            return frozenset() if address is None else frozenset({f"{address[0]}:{address[1]}"})
        kwargs = pool.connection_kwargs
        return frozenset({f"{kwargs.get('host')}:{kwargs.get('port')}"})


def _url_kwargs(url: str) -> dict[str, Any]:
    return dict(parse_url(url))


def _master_kwargs(url: str) -> dict[str, Any]:
    """What the URL says of the master's connections (credentials, database, TLS), for a
    sentinel-managed pool: its host and port are the sentinels' to say."""
    kwargs = _url_kwargs(url)
    for name in ("host", "port", "path"):
        kwargs.pop(name, None)
    if kwargs.pop("connection_class", None) is not None and url.startswith("rediss://"):
        kwargs["ssl"] = True  # the pool picks its own TLS connection class
    return kwargs
