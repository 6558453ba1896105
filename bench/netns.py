"""Load processes in a network namespace of their own (``broker_bench.py --client-netns``).

On loopback the kernel runs the *receiving* socket's TCP stack inside the sender's
system call: every frame the broker writes to a client is also received, queued and
woken up for on the broker's CPU (perf: 38% of the broker's CPU in a broadcast,
docs/performance.md). Across a real network that half runs on the clients' machines, but
the broker receives the clients' acknowledgements instead, which loopback processed on
the clients' CPU. Here the clients get a namespace joined to the broker's by a veth pair,
and each end's receive processing is steered (RPS) to its own side's CPU: the clients'
to the load CPU, the broker's (acknowledgements, requests) to the broker's, as on a
network. (Measured: the broker's CPU per delivery does not change: the acknowledgements
it now receives cost what its clients' receive path did, plus an inter-processor
interrupt per batch, which a VM pays dearly.)

Needs root (``ip netns``, sysfs); everything is removed again on exit, and a namespace
left by a killed run is replaced at the next start.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

NAMESPACE = "tb-bench-clients"
BROKER_ADDRESS = "10.77.0.1"
_BROKER_LINK, _CLIENT_LINK = "tbbench0", "tbbench1"


def client_address(index: int) -> str:
    """The source address of load process ``index`` (one each, so that no process runs
    short of ephemeral ports)."""
    return f"10.77.0.{2 + index}"


def exec_prefix() -> list[str]:
    """What runs a command inside the clients' namespace."""
    return ["ip", "netns", "exec", NAMESPACE]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _steer(link: str, cpu: int, namespace: bool) -> None:
    """Receive processing of ``link`` on ``cpu`` (RPS: the sender's CPU only queues)."""
    path = f"/sys/class/net/{link}/queues/rx-0/rps_cpus"
    mask = format(1 << cpu, "x")
    if namespace:  # the namespace's own sysfs: ip netns exec mounts it
        cmd = [*exec_prefix(), "sh", "-c", f"echo {mask} > {path}"]
        subprocess.run(cmd, check=True, capture_output=True, timeout=30)
    else:
        Path(path).write_text(mask)


def _remove() -> None:
    subprocess.run(["ip", "netns", "del", NAMESPACE], capture_output=True, timeout=30)


@contextlib.contextmanager
def client_namespace(broker_cpu: int, load_cpu: int, addresses: int) -> Iterator[None]:
    """The clients' namespace with ``addresses`` source addresses, for the block."""
    _remove()  # a previous run's, killed before it could clean up
    try:
        _ip("netns", "add", NAMESPACE)
        _ip("link", "add", _BROKER_LINK, "type", "veth", "peer", "name", _CLIENT_LINK,
            "netns", NAMESPACE)  # fmt: skip
        _ip("addr", "add", f"{BROKER_ADDRESS}/24", "dev", _BROKER_LINK)
        _ip("link", "set", _BROKER_LINK, "up")
        for i in range(addresses):
            _ip("-n", NAMESPACE, "addr", "add", f"{client_address(i)}/24", "dev", _CLIENT_LINK)
        _ip("-n", NAMESPACE, "link", "set", _CLIENT_LINK, "up")
        _ip("-n", NAMESPACE, "link", "set", "lo", "up")
        _steer(_BROKER_LINK, broker_cpu, namespace=False)
        _steer(_CLIENT_LINK, load_cpu, namespace=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        _remove()
        detail = getattr(exc, "stderr", b"") or b""
        raise SystemExit(
            f"--client-netns: cannot build the clients' namespace ({exc}; "
            f"{detail.decode(errors='replace').strip()}): it needs root and iproute2"
        ) from None
    try:
        yield
    finally:
        _remove()  # takes the veth pair with it
