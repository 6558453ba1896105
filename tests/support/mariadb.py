"""A real MariaDB server on a free loopback port: wafer-node-sdk keeps its logins in MySQL
(table ``cSessionInfo``), so its tests need one. Debian's ``mariadb-server`` (installed by
``scripts/test.sh``); a private data directory, no grant tables, nothing kept afterwards."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.servers import free_port, stop_process


class MariaDBServer:
    def __init__(self) -> None:
        server = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin")
        install = shutil.which("mariadb-install-db")
        if server is None or install is None:
            raise RuntimeError("mariadb-server is not installed (scripts/test.sh installs it)")
        self.server, self.install = server, install
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tb-mariadb-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        data = self.dir / "data"
        subprocess.run(
            [
                self.install,
                "--no-defaults",
                f"--datadir={data}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        with (self.dir / "server.log").open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    self.server,
                    "--no-defaults",
                    "--user=root",
                    f"--datadir={data}",
                    f"--socket={self.dir / 'mysqld.sock'}",
                    f"--pid-file={self.dir / 'mysqld.pid'}",
                    f"--port={self.port}",
                    "--bind-address=127.0.0.1",
                    "--skip-grant-tables",
                    "--skip-log-bin",
                    "--innodb-buffer-pool-size=16M",
                    "--innodb-log-file-size=8M",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + 30
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.dir / "server.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"mariadbd did not start:\n{log}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        """The server's greeting packet has arrived on its TCP port."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                return len(conn.recv(64)) > 4
        except OSError:
            return False

    def stop(self) -> None:
        stop_process(self.proc)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
