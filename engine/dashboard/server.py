"""Serve an ASGI app with uvicorn inside the running event loop (tests, scripts, examples)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Iterator

import anyio
import uvicorn
from starlette.types import ASGIApp

from engine.dashboard.live import end_streams


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host program."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.startup_done = anyio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.startup_done.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Open event streams would keep uvicorn waiting for their responses to end.
        end_streams()
        await super().shutdown(sockets)


@contextlib.asynccontextmanager
async def serving(
    app: ASGIApp, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 10.0
) -> AsyncIterator[str]:
    """Run ``app`` on ``host:port`` (0: a free port, bound before the server starts, so no
    race) for the duration of the block; yields the base URL."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    server = _Server(config)
    shown = f"[{host}]" if ":" in host else host
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            with anyio.fail_after(startup_timeout):
                await server.startup_done.wait()
            if not server.started:
                raise RuntimeError(f"the server did not start on {host}:{bound_port}")
            try:
                yield f"http://{shown}:{bound_port}"
            finally:
                server.should_exit = True
    finally:
        sock.close()
