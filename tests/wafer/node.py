"""The Node side of the Wafer tests as child processes: the four published SDKs, driven
through the JSON-line programs in ``tests/wafer/js/`` (its README has their commands)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

JS = Path(__file__).resolve().parent / "js"

Line = dict[str, Any]


def install_sdks() -> None:
    """Fetch the SDKs from npm (pinned, unmodified) unless already there; skip the tests
    on a machine without Node."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node and npm are needed for the Wafer SDK tests")
    subprocess.run(["bash", str(JS / "setup.sh")], check=True, stdout=subprocess.DEVNULL)


class NodeProcess:
    """One Node program: commands in, replies and events out, every line kept."""

    def __init__(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.lines: list[Line] = []
        self._changed = asyncio.Event()
        self._seq = 0
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stderr_reader: asyncio.Task[None] | None = None
        self.stderr = bytearray()

    async def start(self) -> Line:
        self.proc = await asyncio.create_subprocess_exec(
            "node",
            *self.args,
            cwd=JS,
            env=self.env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())
        self._stderr_reader = asyncio.create_task(self._drain_stderr())
        return await self.wait(lambda o: o.get("event") == "ready", what="ready")

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"event": "garbage", "line": raw.decode(errors="replace")}
            self.lines.append(line)
            self._changed.set()
        self.lines.append({"event": "exited"})
        self._changed.set()

    async def _drain_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.stderr += raw[-4096:]

    async def wait(
        self,
        condition: Callable[[Line], bool],
        seconds: float = 10.0,
        what: str = "",
        after: int = 0,
    ) -> Line:
        """The first line (from index ``after``) that meets ``condition``."""
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            for line in self.lines[after:]:
                if condition(line):
                    return line
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                tail = "\n".join(json.dumps(line)[:300] for line in self.lines[-15:])
                raise AssertionError(
                    f"{self.name}: no {what or 'such line'} within {seconds}s; last lines:\n"
                    f"{tail}\nstderr: {self.stderr[-1500:].decode(errors='replace')}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def command(self, seconds: float = 10.0, **command: Any) -> Line:
        """Send a command; its reply (``ok`` checked by the caller)."""
        assert self.proc is not None and self.proc.stdin is not None
        self._seq += 1
        seq, mark = self._seq, len(self.lines)
        self.proc.stdin.write((json.dumps({"id": seq, **command}) + "\n").encode())
        await self.proc.stdin.drain()
        return await self.wait(
            lambda o: o.get("reply") is not None and o.get("id") == seq,
            seconds,
            f"reply to {command.get('cmd')}",
            after=mark,
        )

    async def ok(self, seconds: float = 10.0, **command: Any) -> Any:
        reply = await self.command(seconds, **command)
        assert reply.get("ok"), f"{self.name}: {command.get('cmd')} failed: {reply}"
        return reply.get("result")

    def count(self, condition: Callable[[Line], bool]) -> int:
        return sum(1 for line in self.lines if condition(line))

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader


def tunnel_event(kind: str, **content: Any) -> Callable[[Line], bool]:
    """A client's tunnel event of ``kind`` whose content has ``content``'s items."""

    def matches(line: Line) -> bool:
        if line.get("event") != "tunnel" or line.get("type") != kind:
            return False
        got = line.get("content")
        return all(isinstance(got, dict) and got.get(k) == v for k, v in content.items())

    return matches
