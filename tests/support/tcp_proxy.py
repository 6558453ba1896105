"""A TCP proxy on loopback that can cut the link it carries: one pod's way to Redis.

Why a proxy rather than stopping Redis: a partition cuts off ONE pod while the others
(and the test) still reach Redis, so the others notice the silent pod, reap it, and the
cut-off pod has to find out afterwards what happened without it.

How it cuts (``cut()``), like a firewall that silently DROPs packets, not one that
REJECTs them: bytes on open connections stop flowing both ways, and new connections are
accepted but not forwarded. Nothing is closed or reset, so the pod sees what a real
partition shows: connects that succeed (to the proxy) and commands that never answer,
until redis-py's socket timeout (a third of a lease in the broker) gives up. Refusing
connections instead would tell the pod at once and test an easier case.
``restore()`` lets the held bytes through, as TCP's retransmissions do when a partition
heals: commands written during the cut reach Redis late (even those whose client timed
out and closed meanwhile), and answers and published messages reach the pod late.
``cut(reject=True)`` is the easy case for comparison: every connection is reset and new
ones are refused until ``restore()``.

The proxy runs as a process of its own (``python -m tests.support.tcp_proxy``, driven by
one-line commands on its stdin): in the test's process, busy with hundreds of clients and
the business server, the proxied pod's Redis calls would wait for that process's turn and
time out now and then, a fault nobody asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from pathlib import Path

from tests.support.servers import free_port

CHUNK = 65536
REPO_ROOT = Path(__file__).resolve().parents[2]


class TcpProxy:
    """127.0.0.1:``port`` -> ``upstream_host``:``upstream_port``, one upstream connection
    per accepted one (the handle of the proxy process)."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self.proc: subprocess.Popen[str] | None = None

    def url(self, scheme: str = "redis", path: str = "/0") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        host, port = self.upstream
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.tcp_proxy", str(self.port), host, str(port)],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._command("ping")

    def cut(self, reject: bool = False) -> None:
        """Partition: hold every byte (default), or reset and refuse (``reject``)."""
        self._command("reject" if reject else "cut")

    def restore(self) -> None:
        self._command("restore")

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(OSError, RuntimeError):
                self._command("quit")
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()

    def _command(self, command: str) -> None:
        """Send one command; return once the proxy has carried it out (it answers at once)."""
        proc = self.proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(command + "\n")
        proc.stdin.flush()
        if proc.stdout.readline().strip() != "ok":
            raise RuntimeError(f"tcp proxy did not carry out {command!r} (exit {proc.poll()})")


class _Relay:
    """The proxy itself, in the proxy process."""

    def __init__(self, port: int, upstream: tuple[str, int]) -> None:
        self.port = port
        self.upstream = upstream
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.reject = False
        self.writers: set[asyncio.StreamWriter] = set()

    async def serve(self) -> None:
        server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        loop = asyncio.get_running_loop()
        commands = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
        try:
            while line := (await commands.readline()).decode().strip():
                if line == "quit":
                    break
                self._carry_out(line)
                print("ok", flush=True)
        finally:
            server.close()
            self._abort_all()
        print("ok", flush=True)

    def _carry_out(self, command: str) -> None:
        if command in ("cut", "reject"):
            self.flowing.clear()
            if command == "reject":
                self.reject = True
                self._abort_all()
        elif command == "restore":
            self.reject = False
            self.flowing.set()

    def _abort_all(self) -> None:
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.reject:
            writer.transport.abort()
            return
        self.writers.add(writer)
        try:
            await self.flowing.wait()  # blackholed while cut: accepted, not forwarded
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:  # upstream down (a Redis restart): the client sees a reset
                writer.transport.abort()
                return
            self.writers.add(up_writer)
            pumps = [
                asyncio.create_task(self._pump(reader, up_writer)),
                asyncio.create_task(self._pump(up_reader, writer)),
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
                up_writer.close()
                self.writers.discard(up_writer)
        finally:
            writer.close()
            self.writers.discard(writer)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """Copy until end of file or error; while cut, read nothing and write nothing
        (what was read just before the cut waits for ``restore``)."""
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                await self.flowing.wait()
                data = await src.read(CHUNK)
                await self.flowing.wait()
                if not data:
                    return
                dst.write(data)
                await dst.drain()


if __name__ == "__main__":
    listen, host, upstream_port = sys.argv[1:4]
    asyncio.run(_Relay(int(listen), (host, int(upstream_port))).serve())
