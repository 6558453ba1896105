"""Highly available Redis on loopback, for real: a Redis Cluster of three masters with a
replica each, and a master with a replica watched by three sentinels.

Both are plain ``redis-server`` processes (``--cluster-enabled yes`` and ``redis-cli
--cluster create``; ``--sentinel``), tuned to fail over in a few seconds rather than the
default tens: ``cluster-node-timeout`` and ``down-after-milliseconds`` of a second.
Each gives the broker flags that point a pod at it (``broker_args``).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import redis

from tests.support.servers import free_port, stop_process

FAILOVER_MS = 1000  # a master silent this long is taken for dead
PASSWORD = "tb-test-redis-password"  # every server requires it: credentials are exercised


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed (scripts/test.sh installs redis-server)")
    return found


def _until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(redis.RedisError, OSError):
            if check():
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"redis: {what} not within {timeout} s")
        time.sleep(0.05)


class Instance:
    """One ``redis-server`` process (a data node or a sentinel) in a scratch directory."""

    def __init__(self, root: Path, name: str, args: list[str], config: str = "") -> None:
        self.port = free_port()
        self.dir = root / name
        self.dir.mkdir()
        self.config = self.dir / "redis.conf"
        self.config.write_text(f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n{config}")
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(
            port=self.port, password=PASSWORD, socket_timeout=2, decode_responses=True
        )

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [_binary("redis-server"), str(self.config), *self.args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _until(lambda: bool(self.client().ping()), f"{self.address} answering", 10)

    def kill(self) -> None:
        """kill -9: no goodbye to replicas, sentinels or the cluster bus."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


DATA_NODE = (
    f"save ''\nappendonly no\nprotected-mode yes\nrequirepass {PASSWORD}\nmasterauth {PASSWORD}\n"
)


class RedisCluster:
    """Three masters, each with one replica, slots spread by ``redis-cli``."""

    def __init__(self, masters: int = 3) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="tb-redis-cluster-"))
        config = (
            DATA_NODE + "cluster-enabled yes\ncluster-config-file nodes.conf\n"
            f"cluster-node-timeout {FAILOVER_MS}\ncluster-replica-validity-factor 0\n"
        )
        self.nodes = [
            Instance(self.root, f"node{i}", [], config + f"cluster-port {free_port()}\n")
            for i in range(masters * 2)
        ]
        self.masters_wanted = masters

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run(
            [
                _binary("redis-cli"),
                "--cluster",
                "create",
                *(n.address for n in self.nodes),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
                "-a",
                PASSWORD,
                "--no-auth-warning",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Every live node says the cluster is ok and agrees on the masters."""

        def healthy() -> bool:
            live = [n for n in self.nodes if n.proc is not None]
            if not all(n.client().cluster("info")["cluster_state"] == "ok" for n in live):
                return False
            return len(self.masters()) == self.masters_wanted

        _until(healthy, "cluster ok", timeout)

    def masters(self) -> list[Instance]:
        """The nodes that are masters now, as a live node sees the cluster."""
        live = next(n for n in self.nodes if n.proc is not None)
        ports = {
            int(address.rsplit(":", 1)[1])
            for address, node in live.client().cluster("nodes").items()
            if "master" in node["flags"] and "fail" not in node["flags"] and node["slots"]
        }
        return [n for n in self.nodes if n.port in ports]

    def master_of(self, key: str) -> Instance:
        """The master that owns ``key``'s slot now."""
        live = next(n for n in self.nodes if n.proc is not None)
        slot = int(live.client().cluster("keyslot", key))
        for address, node in live.client().cluster("nodes").items():
            if "master" in node["flags"] and "fail" not in node["flags"]:
                for first, *rest in node["slots"]:  # [start, end], or [slot] after a move
                    if int(first) <= slot <= int(rest[-1] if rest else first):
                        port = int(address.rsplit(":", 1)[1])
                        return next(n for n in self.nodes if n.port == port)
        raise LookupError(key)

    def move_slot_of(self, key: str) -> Instance:
        """Migrate the slot of ``key``, keys and all, to another master, as a resharding
        does (``IMPORTING``/``MIGRATING``, ``MIGRATE``, ``SETSLOT NODE``): clients meet
        ``ASK`` and then ``MOVED``. Returns the new owner."""
        source = self.master_of(key)
        target = next(m for m in self.masters() if m is not source)
        slot = int(source.client().cluster("keyslot", key))
        source_id, target_id = source.client().cluster("myid"), target.client().cluster("myid")
        target.client().execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
        source.client().execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
        for _ in range(1000):
            keys = source.client().execute_command("CLUSTER GETKEYSINSLOT", slot, 100)
            if not keys:
                break
            source.client().execute_command(
                "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "AUTH", PASSWORD, "KEYS", *keys
            )
        for master in (target, source, *self.masters()):
            master.client().execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
        return target

    def broker_args(self) -> list[str]:
        seed, *more = self.nodes
        return [
            "--redis-topology",
            "cluster",
            "--redis-url",
            f"redis://:{PASSWORD}@{seed.address}/0",
            "--redis-cluster-nodes",
            ",".join(n.address for n in more),
        ]

    def cleanup(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class RedisSentinels:
    """A master and a replica, three sentinels (quorum two) watching them as
    ``mymaster``."""

    NAME = "mymaster"

    def __init__(self, sentinels: int = 3) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="tb-redis-sentinel-"))
        self.master = Instance(self.root, "master", [], DATA_NODE)
        self.replica = Instance(
            self.root, "replica", [], DATA_NODE + f"replicaof 127.0.0.1 {self.master.port}\n"
        )
        self.sentinels = [
            Instance(
                self.root,
                f"sentinel{i}",
                ["--sentinel"],
                f"sentinel monitor {self.NAME} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {self.NAME} {FAILOVER_MS}\n"
                f"sentinel failover-timeout {self.NAME} 10000\n"
                f"sentinel auth-pass {self.NAME} {PASSWORD}\n"
                f"requirepass {PASSWORD}\nsentinel sentinel-pass {PASSWORD}\n",
            )
            for i in range(sentinels)
        ]
        self.data_nodes = [self.master, self.replica]

    def start(self) -> None:
        for node in (*self.data_nodes, *self.sentinels):
            node.start()

        def watching() -> bool:
            for sentinel in self.sentinels:
                client = sentinel.client()
                if len(client.sentinel_slaves(self.NAME)) < 1:
                    return False
                if len(client.sentinel_sentinels(self.NAME)) < len(self.sentinels) - 1:
                    return False
            return bool(self.replica.client().info("replication")["master_link_status"] == "up")

        _until(watching, "sentinels watching master and replica")

    def current_master(self) -> Instance:
        _, port = self.sentinels[0].client().sentinel_get_master_addr_by_name(self.NAME)
        return next(n for n in self.data_nodes if n.port == int(port))

    def wait_for_new_master(self, old: Instance, timeout: float = 30.0) -> Instance:
        """Until every sentinel names another master, and it says it is one."""

        def switched() -> bool:
            for sentinel in self.sentinels:
                if sentinel.proc is None:
                    continue
                _, port = sentinel.client().sentinel_get_master_addr_by_name(self.NAME)
                if int(port) == old.port:
                    return False
            return bool(self.current_master().client().info("replication")["role"] == "master")

        _until(switched, "failover", timeout)
        return self.current_master()

    def broker_args(self) -> list[str]:
        return [
            "--redis-topology",
            "sentinel",
            "--redis-url",
            f"redis://:{PASSWORD}@mymaster/0",
            "--redis-sentinels",
            ",".join(s.address for s in self.sentinels),
            "--redis-sentinel-master",
            self.NAME,
            "--redis-sentinel-password",
            PASSWORD,
        ]

    def cleanup(self) -> None:
        for node in (*self.sentinels, *self.data_nodes):
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def as_environment(broker_args: list[str]) -> dict[str, str]:
    """The ``TB_*`` variables saying what ``broker_args`` say (for the CLI)."""
    names, values = broker_args[::2], broker_args[1::2]
    return {
        "TB_" + name[2:].replace("-", "_").upper(): value
        for name, value in zip(names, values, strict=True)
    }


@contextlib.contextmanager
def running(servers: RedisCluster | RedisSentinels) -> Iterator[None]:
    try:
        servers.start()
        yield
    finally:
        servers.cleanup()
