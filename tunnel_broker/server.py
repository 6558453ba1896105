"""Running the broker under uvicorn, with a graceful drain on SIGTERM.

uvicorn on its own closes WebSockets (1012) the moment it is told to exit. A broker must
first turn unready so the load balancer stops sending clients, give open tunnels
``drain_seconds`` to move, then close the rest and deliver every pending webhook
(``tunnel.closed`` included) before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator, Iterator
from types import FrameType

import uvicorn

from tunnel_broker.apps import App
from tunnel_broker.config import Settings
from tunnel_broker.http.app import BrokerApp
from tunnel_broker.http.guard import FrontEndLimits, guarded_http_protocol
from tunnel_broker.node import Node
from tunnel_broker.tunnels.protocol import TunnelProtocol

logger = logging.getLogger("tunnel_broker.server")

_WS_FRAME_SLACK = 1024


def uvicorn_config(app: BrokerApp, settings: Settings, apps: list[App]) -> uvicorn.Config:
    # Frames larger than every app allows are refused by the protocol layer (1009) before
    # they are buffered whole; the per-app limit is enforced per tunnel above that.
    largest = max((a.limits.max_message_bytes for a in apps), default=128 * 1024)
    limits = FrontEndLimits(
        settings.max_connections, settings.header_timeout, settings.max_header_bytes
    )
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=guarded_http_protocol(limits),
        # Client addresses (per-client login budgets, logs) from trusted proxies only.
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        # uvicorn's sans-I/O implementation (no task per connection beyond the app's own,
        # and the send semantics tunnels/writer.py relies on), with deadlines that wait
        # while the broker holds a socket under back-pressure (tunnels/protocol.py).
        ws=TunnelProtocol,
        ws_max_size=largest + _WS_FRAME_SLACK,
        ws_ping_interval=settings.ping_interval or None,
        ws_ping_timeout=settings.ping_timeout or None,
        ws_per_message_deflate=False,
        lifespan="on",
        log_config=None,
        access_log=settings.log_level == "debug",
        server_header=False,
        timeout_graceful_shutdown=5,
        # Load balancers reuse idle upstream connections for 60 s or more; closing ours
        # first races their next request and turns it into a 502.
        timeout_keep_alive=max(1, int(settings.keep_alive_timeout)),
        backlog=4096,
    )


class BrokerServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, node: Node, handle_signals: bool = True) -> None:
        super().__init__(config)
        self.node = node
        self.handle_signals = handle_signals
        self._loop: asyncio.AbstractEventLoop | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        self._loop = asyncio.get_running_loop()
        if not self.handle_signals:
            yield
            return
        with super().capture_signals():
            yield

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.node.draining or (sig == signal.SIGINT and self.force_exit):
            super().handle_exit(sig, frame)
            return
        if self._loop is None:
            super().handle_exit(sig, frame)
            return
        logger.info("signal %s: draining before exit", signal.Signals(sig).name)
        self._loop.call_soon_threadsafe(self._drain_then_exit)

    def _drain_then_exit(self) -> None:
        task = self.node.begin_drain()
        task.add_done_callback(lambda _: setattr(self, "should_exit", True))


# Allocations (net of frees) between two collections of CPython's youngest generation;
# its default is 700.
YOUNG_COLLECTION_THRESHOLD = 10_000


def collect_garbage_less_often() -> None:
    """Each tunnel a broker opens leaves a few hundred objects that live as long as the
    tunnel; with CPython's default the collector ran every few tunnels and walked them
    again and again on their way to the oldest generation: a sixth of a tunnel's setup
    at 10,000 tunnels (``bench/broker_bench.py --memory --tunnels 10000``: WebSocket
    connect 571-598 -> 431-477 us broker CPU; echo and idle memory unchanged within
    noise; docs/performance.md). Cycles are still collected, a little later. Process-wide,
    so only the broker's own entry point calls it."""
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, oldest)


def build(
    settings: Settings, apps: list[App], handle_signals: bool = True
) -> tuple[Node, BrokerServer]:
    node = Node(settings, apps)
    app = BrokerApp(node)
    server = BrokerServer(uvicorn_config(app, settings, apps), node, handle_signals)
    return node, server


@contextlib.asynccontextmanager
async def running(settings: Settings, apps: list[App]) -> AsyncIterator[tuple[Node, BrokerServer]]:
    """Serve in the current event loop until the block exits (tests, embedding)."""
    node, server = build(settings, apps, handle_signals=False)
    task = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("broker server exited during start-up")
        await asyncio.sleep(0.01)
    try:
        yield node, server
    finally:
        server.should_exit = True
        await task
