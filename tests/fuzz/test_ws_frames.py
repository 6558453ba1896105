"""Raw WebSocket frames after the handshake: whatever a hostile client writes on an open
tunnel, the broker ends or keeps that socket properly and stays well.

Each example issues a tunnel with the app's API key, does the HTTP upgrade on a raw
socket, writes generated frames (``wsframes.py``), then ends in one of four ways: a
proper close frame, a half-close, an abort (RST), or silence. A watcher thread then reads
the socket as a sluggish but correct client would (it answers a close frame, never a
ping) until the broker drops it. Afterwards:

- every socket ended within ``END_BOUND`` of the client's last write: the broker drops a
  silent or stuck client within two keepalive periods (``--ping-interval`` and
  ``--ping-timeout`` are ``PING`` here), and a client that never answers its close frame
  within uvicorn's close timeout;
- what the broker wrote is well-formed server frames (unmasked, no RSV bits, known
  opcodes, short unfragmented control frames, a close code a peer may send);
- every tunnel's webhook events are ``tunnel.connected``, messages, exactly one
  ``tunnel.closed``; for sequences a correct client could send, the messages are exactly
  those sent (fragments joined, pings and pongs between them skipped), closed with 1000;
- no tunnel is left open (``tb_tunnels_open``), ``/healthz`` answers, a fresh tunnel
  echoes, nothing unhandled is in the broker's log, and its memory stays bounded.
"""

from __future__ import annotations

import base64
import contextlib
import os
import queue
import selectors
import socket
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzz.budget import examples, fuzz_settings, timeout
from tests.fuzz.harness import (
    MIB,
    FuzzBroker,
    ThreadedReceiver,
    fuzz_app,
    health_problems,
    rss_problems,
    running_broker,
    settle_rss,
)
from tests.fuzz.wsframes import (
    CLOSE,
    TEXT,
    Frame,
    Item,
    Message,
    accept_value,
    clean_messages,
    close_code,
    close_payload,
    handshake_request,
    hostile_items,
    parse_server_frames,
)

# Each test takes well under a minute in CI; longer with TB_FUZZ_EXAMPLES.
pytestmark = timeout(120)

APP = "demo"
# The app's max_message_bytes, small so that frames over it are cheap to send: the
# tunnel closes with 1009 above it, and the WebSocket layer refuses frames over it plus
# 1 KiB before buffering them (tunnel_broker/server.py).
MAX_MESSAGE = 1024
LARGEST = MAX_MESSAGE + 1024 + 300
PING = 1.0
# uvicorn waits this long for the client to answer the broker's close frame.
CLOSE_TIMEOUT = 10.0
END_BOUND = 2 * PING + CLOSE_TIMEOUT + 3.0
EXAMPLES = 300
WARMUP = 60
# RSS the broker may gain over the examples after the warm-up (240 of them in CI). An
# open socket costs the broker about 25 KiB (measured: 400 raw tunnels held open, with or
# without a half-received frame); all of it is given back when the socket ends, and the
# growth measured over the whole batch is 0.1-0.3 MiB (allocator slack). A leak of each
# socket's state would be about 6 MiB over the batch.
RSS_BOUND = 4 * MIB

# How a client ends its writing: a close frame, a half-close (FIN), an abort (RST), or
# silence (the broker's keepalive must then drop it).
Ending = Literal["close", "half-close", "abort", "silent"]
ENDINGS: tuple[Ending, ...] = ("close", "half-close", "abort", "silent")


@dataclass
class Hostile:
    """One socket of an example, as the watcher follows it to its end."""

    tunnel_id: str
    sock: socket.socket
    received: bytearray
    done_sending: float
    expected: list[Message] | None  # the messages relayed, for a correct client's frames
    ending: Ending
    ended: float | None = None
    answered_close: bool = False


@dataclass
class Watcher:
    """Reads every hostile socket until the broker ends it, on one thread: answers the
    broker's close frame (as any client does), never its pings."""

    sockets: list[Hostile] = field(default_factory=list)
    _new: queue.SimpleQueue[Hostile] = field(default_factory=queue.SimpleQueue)
    _stop: threading.Event = field(default_factory=threading.Event)

    def add(self, hostile: Hostile) -> None:
        self.sockets.append(hostile)
        if hostile.ending == "abort":
            hostile.ended = hostile.done_sending
            return
        self._new.put(hostile)

    def run(self) -> None:
        with selectors.DefaultSelector() as selector:
            while not self._stop.is_set():
                while not self._new.empty():
                    hostile = self._new.get()
                    selector.register(hostile.sock, selectors.EVENT_READ, hostile)
                for key, _ in selector.select(timeout=0.05):
                    hostile = key.data
                    if not self._read(hostile):
                        selector.unregister(hostile.sock)
                        hostile.sock.close()
            for key in list(selector.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]

    def _read(self, hostile: Hostile) -> bool:
        try:
            chunk = hostile.sock.recv(65536)
        except OSError:
            chunk = b""
        if not chunk:
            hostile.ended = time.monotonic()
            return False
        hostile.received += chunk
        if not hostile.answered_close and hostile.ending != "half-close":
            frames, _ = parse_server_frames(bytes(hostile.received))
            if any(f.opcode == CLOSE for f in frames):
                hostile.answered_close = True
                with contextlib.suppress(OSError):
                    hostile.sock.sendall(Frame(CLOSE, close_payload(1000)).encode())
        return True

    @contextlib.contextmanager
    def running(self) -> Iterator[Watcher]:
        thread = threading.Thread(target=self.run, name="ws-watcher", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(5)

    def wait_all_ended(self) -> None:
        deadline = max((h.done_sending for h in self.sockets), default=0) + END_BOUND + 1
        while time.monotonic() < deadline and any(h.ended is None for h in self.sockets):
            time.sleep(0.05)


@dataclass
class WsWorld:
    broker: FuzzBroker
    receiver: ThreadedReceiver


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WsWorld]:
    receiver = ThreadedReceiver()
    app = fuzz_app(APP, receiver, max_message_bytes=MAX_MESSAGE)
    args = ["--ping-interval", str(PING), "--ping-timeout", str(PING)]
    with (
        receiver.running(),
        running_broker(tmp_path_factory.mktemp("ws"), [app], *args) as broker,
    ):
        yield WsWorld(broker, receiver)
        assert receiver.rejected_signatures == 0


def open_raw_tunnel(broker: FuzzBroker) -> tuple[str, socket.socket, bytes]:
    """Issue a tunnel and upgrade a raw socket to it; returns the tunnel id, the socket
    and whatever the broker sent after its 101 answer."""
    issued = broker.issue(APP, "raw-" + uuid.uuid4().hex[:16])
    url = urlsplit(issued["connect_url"])
    sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = os.urandom(16)
    sock.sendall(handshake_request(f"{url.path}?{url.query}", url.netloc, key))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, f"the broker closed the handshake: {head!r}"
        head += chunk
    head, _, rest = head.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 101"), lines[0]
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    assert headers["sec-websocket-accept"] == accept_value(key)
    sock.settimeout(None)
    sock.setblocking(False)
    return issued["tunnel_id"], sock, rest


def write_all(sock: socket.socket, data: bytes, cuts: list[int]) -> None:
    """Write ``data`` in pieces cut at ``cuts``; stop quietly once the broker has hung up."""
    sock.setblocking(True)
    sock.settimeout(5)
    points = sorted({c for c in cuts if 0 < c < len(data)})
    try:
        for a, b in zip([0, *points], [*points, len(data)], strict=True):
            sock.sendall(data[a:b])
    except OSError:
        pass
    sock.setblocking(False)


def end_socket(sock: socket.socket, ending: Ending) -> None:
    try:
        if ending == "close":
            sock.setblocking(True)
            sock.sendall(Frame(CLOSE, close_payload(1000)).encode())
            sock.setblocking(False)
        elif ending == "half-close":
            sock.shutdown(socket.SHUT_WR)
        elif ending == "abort":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
    except OSError:
        pass


# An example: the items written, the messages a correct client meant (None for hostile
# ones), how the client ends, and where its writes are cut.
Example = tuple[list[Item], list[Message] | None, Ending, list[int]]

cuts = st.lists(st.integers(min_value=1, max_value=4000), max_size=4)
correct_clients: st.SearchStrategy[Example] = st.builds(
    lambda pair, c: (pair[1], pair[0], "close", c), clean_messages(MAX_MESSAGE), cuts
)
hostile_clients: st.SearchStrategy[Example] = st.builds(
    lambda items, ending, c: (items, None, ending, c),
    hostile_items(MAX_MESSAGE, LARGEST),
    st.sampled_from(ENDINGS),
    cuts,
)


def check_events(receiver: ThreadedReceiver, hostile: Hostile) -> list[str]:
    """What is wrong with one tunnel's webhook events."""
    events = receiver.events_of(hostile.tunnel_id)
    kinds = [e["type"] for e in events]
    if kinds.count("tunnel.connected") != 1 or kinds[0] != "tunnel.connected":
        return [f"{hostile.tunnel_id}: events {kinds}"]
    if kinds.count("tunnel.closed") != 1 or kinds[-1] != "tunnel.closed":
        return [f"{hostile.tunnel_id}: events {kinds}"]
    if hostile.expected is None:
        return []
    relayed = [
        Message(True, e["data"].encode())
        if "data" in e
        else Message(False, base64.b64decode(e["data_base64"]))
        for e in events
        if e["type"] == "tunnel.message"
    ]
    wrong = []
    if relayed != hostile.expected:
        wrong.append(f"{hostile.tunnel_id}: relayed {relayed!r}, sent {hostile.expected!r}")
    if events[-1]["code"] != 1000:
        wrong.append(f"{hostile.tunnel_id}: a clean close reported as {events[-1]['code']}")
    return wrong


def test_hostile_frames_leave_the_broker_healthy(world: WsWorld) -> None:
    broker, receiver = world.broker, world.receiver
    watcher = Watcher()
    rss: list[int] = []

    @fuzz_settings(EXAMPLES)
    @given(example=st.one_of(correct_clients, hostile_clients))
    # Always tried: text that is not UTF-8, alone and with the client's close frame
    # right behind it in the same write.
    @example(example=([Frame(TEXT, b"\xff")], None, "silent", []))
    @example(example=([Frame(TEXT, b"\xff"), Frame(CLOSE, close_payload(1000))], None, "close", []))
    def run(example: Example) -> None:
        items, expected, ending, cut_at = example
        if len(watcher.sockets) == examples(WARMUP):
            rss.append(settle_rss(broker))
        tunnel_id, sock, rest = open_raw_tunnel(broker)
        write_all(sock, b"".join(item.encode() for item in items), cut_at)
        end_socket(sock, ending)
        watcher.add(Hostile(tunnel_id, sock, bytearray(rest), time.monotonic(), expected, ending))

    with watcher.running():
        run()
        watcher.wait_all_ended()

    codes = Counter(
        str(close_code(parse_server_frames(bytes(h.received))[0])) for h in watcher.sockets
    )
    print(f"{len(watcher.sockets)} sockets; the broker's close codes: {dict(codes)}")
    problems = socket_problems(watcher)
    receiver.wait_for(
        lambda: all(receiver.events_of(h.tunnel_id, "tunnel.closed") for h in watcher.sockets),
        15,
        "tunnel.closed of every hostile tunnel",
    )
    problems += [w for h in watcher.sockets for w in check_events(receiver, h)][:10]
    still_open = broker.metric("tb_tunnels_open", app=APP)
    if still_open:
        problems.append(f"{still_open:g} tunnels still open after every socket ended")
    problems += health_problems(broker, APP)
    if rss:
        after = settle_rss(broker)
        problems += rss_problems(rss[0], after, RSS_BOUND, "the hostile WebSocket examples")
        print(f"broker RSS after warm-up {rss[0] / MIB:.1f} MiB, at the end {after / MIB:.1f} MiB")
    assert not problems, "\n\n".join(problems)


def socket_problems(watcher: Watcher) -> list[str]:
    """Sockets that did not end in time, and bad frames the broker wrote."""
    slow = [
        f"{h.tunnel_id} ({h.ending}): "
        + ("never ended" if h.ended is None else f"ended after {h.ended - h.done_sending:.1f}s")
        for h in watcher.sockets
        if h.ended is None or h.ended - h.done_sending > END_BOUND
    ]
    problems = [f"sockets not ended within {END_BOUND}s: {slow[:10]}"] if slow else []
    faults = [
        f"{h.tunnel_id}: {fault}"
        for h in watcher.sockets
        for fault in parse_server_frames(bytes(h.received))[1]
    ]
    if faults:
        problems.append(f"the broker wrote bad frames: {faults[:10]}")
    return problems
