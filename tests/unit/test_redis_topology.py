"""Redis topology settings: what a pod is told, what it refuses, what it never prints."""

from __future__ import annotations

import pytest
from redis.asyncio.cluster import RedisCluster

from tunnel_broker.backend.redis.health import RedisHealth
from tunnel_broker.backend.redis.topology import RedisTopology, TrimmedSentinelPool
from tunnel_broker.cli import main
from tunnel_broker.config import settings_from
from tunnel_broker.errors import SettingsError


def topology(**values: str) -> RedisTopology:
    return RedisTopology.from_settings(settings_from(values, {}))


def test_standalone_is_the_default_and_takes_the_url_as_it_is() -> None:
    found = topology(redis_url="rediss://:pw@redis.example:6380/2")
    assert (found.kind, found.sharded) == ("standalone", False)
    assert found.describe() == "standalone redis.example:6380"


def test_sentinel_addresses_master_name_and_credentials() -> None:
    found = topology(
        redis_topology="sentinel",
        redis_url="rediss://app:master-pw@ignored/3",
        redis_sentinels="s1:26379, [::1]:26380,s3:26379",
        redis_sentinel_master="cache",
        redis_sentinel_password="sentinel-pw",
        redis_sentinel_tls="true",
    )
    assert found.sentinels == (("s1", 26379), ("::1", 26380), ("s3", 26379))
    assert (found.master_name, found.sentinel_password, found.sentinel_tls) == (
        "cache",
        "sentinel-pw",
        True,
    )
    client = found.client(1.0, 4)
    pool = client.connection_pool
    assert isinstance(pool, TrimmedSentinelPool)
    # The URL's credentials, database and TLS go to the master; its host does not.
    kwargs = pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("app", "master-pw", 3)
    assert "host" not in kwargs and pool.connection_class.__name__.endswith("SSLConnection")
    assert pool.max_connections == 4


def test_cluster_takes_a_seed_url_and_more_seed_nodes() -> None:
    found = topology(
        redis_topology="cluster",
        redis_url="redis://:pw@node-0:7000/0",
        redis_cluster_nodes="node-1:7000,node-2:7000",
    )
    assert found.sharded and found.cluster_nodes == (("node-1", 7000), ("node-2", 7000))
    assert isinstance(found.client(1.0, 4), RedisCluster)


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"redis_topology": "sentinel"}, "TB_REDIS_SENTINELS"),
        ({"redis_topology": "sentinel", "redis_sentinels": "s1"}, "'s1' is not host:port"),
        ({"redis_sentinels": "s1:99999"}, "is not host:port"),
        ({"redis_cluster_nodes": "n1:x"}, "TB_REDIS_CLUSTER_NODES"),
        ({"redis_topology": "cluster", "redis_url": "redis://n:7000/1"}, "database 0 only"),
        ({"redis_url": "http://redis:6379"}, "redis:// or rediss://"),
    ],
)
def test_settings_no_client_could_use_are_refused(values: dict[str, str], complaint: str) -> None:
    with pytest.raises(SettingsError, match=complaint):
        topology(**values)


def test_unknown_topology_is_refused_by_the_settings_themselves() -> None:
    with pytest.raises(SettingsError, match="standalone, sentinel, cluster"):
        settings_from({"redis_topology": "replicated"}, {})


def test_serve_refuses_a_topology_it_cannot_use_before_starting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", "--backend", "redis", "--redis-topology", "sentinel"]) == 2
    assert "TB_REDIS_SENTINELS" in capsys.readouterr().err


def test_credentials_are_never_printed() -> None:
    found = topology(
        redis_topology="sentinel",
        redis_url="redis://:master-pw@m/0",
        redis_sentinels="s1:26379",
        redis_sentinel_password="sentinel-pw",
    )
    for text in (repr(found), str(found), found.describe()):
        assert "master-pw" not in text and "sentinel-pw" not in text


def test_a_failover_is_a_change_of_masters_after_the_first_look() -> None:
    health = RedisHealth("cluster")
    assert not health.saw_masters(frozenset({"a:1", "b:1"}))  # the first look
    assert not health.saw_masters(frozenset())  # a look that knows none
    assert not health.saw_masters(frozenset({"a:1", "b:1"}))
    assert health.saw_masters(frozenset({"a:1", "c:1"}))  # b's replica c took over
    assert health.snapshot().failovers == 1
    assert health.snapshot().topology == "cluster"
