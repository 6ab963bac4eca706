"""``python -m engine.dashboard MODULE:APP``: serve the dashboard and JSON API with uvicorn.

Refuses to listen on a non-loopback address without authentication (a token from
``--token``/``ENGINE_DASHBOARD_TOKEN`` or basic credentials) unless ``--insecure`` is given,
and refuses tokens and passwords shorter than 16 characters. Without authentication it
answers only to loopback host names unless ``--allowed-host`` names others.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from engine import log as logsetup
from engine.cli import UsageError, load_app
from engine.client.app import Engine
from engine.core.errors import EngineError


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


class _Closing:
    """Closes the engine's connections when the server shuts down (lifespan)."""

    def __init__(self, app: ASGIApp, engine: Engine) -> None:
        self.app = app
        self.engine = engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        try:
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    try:
                        await self.engine.connect()
                    except EngineError as exc:
                        await send({"type": "lifespan.startup.failed", "message": str(exc)})
                        return
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        finally:
            await self.engine.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine.dashboard",
        description="Serve the engine's web dashboard, JSON API (/api) and Prometheus metrics (/metrics).",
    )
    parser.add_argument("app", metavar="MODULE:APP", help="the Engine to inspect, e.g. myapp.jobs:app")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on, 1 to 65535 (default 8080)")
    parser.add_argument(
        "--token",
        default=None,
        help="require this token, 16 characters or more (bearer header or login form); prefer "
        "ENGINE_DASHBOARD_TOKEN, which is not visible in the process list (default: that "
        "variable, else none)",
    )
    parser.add_argument(
        "--basic-auth",
        metavar="USER:PASSWORD",
        default=None,
        help="accept these HTTP basic credentials, the password of 16 characters or more "
        "(default: ENGINE_DASHBOARD_BASIC_AUTH, else none)",
    )
    parser.add_argument(
        "--read-only",
        action="store_true",
        help="show everything, change nothing: no retry, replay, cancel or purge",
    )
    parser.add_argument(
        "--allowed-host",
        metavar="HOST[,HOST...]",
        action="append",
        default=None,
        help="host names the dashboard answers to besides loopback ones (jobs.example.com, "
        "*.example.com, or * for any); repeatable; default ENGINE_DASHBOARD_ALLOWED_HOSTS. "
        "Without authentication only loopback names are answered otherwise",
    )
    parser.add_argument(
        "--metrics-token",
        default=None,
        help="a separate token, 16 characters or more, that opens /metrics only, for scrapers; prefer "
        "ENGINE_DASHBOARD_METRICS_TOKEN (default: that variable, else none)",
    )
    parser.add_argument(
        "--metrics-public",
        action="store_true",
        help="serve /metrics without authentication (default: /metrics needs the dashboard's "
        "credentials or the metrics token)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow listening on a non-loopback address without authentication",
    )
    parser.add_argument(
        "--root-path",
        default="",
        help="URL prefix when served behind a proxy under a path, e.g. /jobs (default: none)",
    )
    logsetup.add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error("--port must be from 1 to 65535")
    from engine.dashboard import create_app, parse_basic_auth
    from engine.dashboard.auth import check_secret
    from engine.dashboard.guard import parse_allowed_hosts

    try:
        logsetup.configure(args.log_level, args.log_json)
        token = args.token or os.environ.get("ENGINE_DASHBOARD_TOKEN") or None
        if token is not None:
            check_secret("dashboard token", token)
        raw_basic = args.basic_auth or os.environ.get("ENGINE_DASHBOARD_BASIC_AUTH") or None
        basic = parse_basic_auth(raw_basic) if raw_basic else None
        metrics_token = args.metrics_token or os.environ.get("ENGINE_DASHBOARD_METRICS_TOKEN") or None
        if metrics_token is not None:
            check_secret("metrics token", metrics_token)
        raw_hosts = (
            ",".join(args.allowed_host)
            if args.allowed_host
            else os.environ.get("ENGINE_DASHBOARD_ALLOWED_HOSTS", "")
        )
        hosts = parse_allowed_hosts(raw_hosts)
        open_dashboard = token is None and basic is None
        if not is_loopback(args.host) and open_dashboard and not args.insecure:
            raise UsageError(
                f"refusing to serve the dashboard on {args.host} without authentication: set "
                "ENGINE_DASHBOARD_TOKEN (or --token / --basic-auth), listen on 127.0.0.1, "
                "or pass --insecure if something in front of it authenticates"
            )
        if not is_loopback(args.host) and open_dashboard and not hosts:
            print(
                "note: without authentication the dashboard answers only to loopback host names; "
                "name the ones it is reached by with --allowed-host",
                file=sys.stderr,
            )
        engine = load_app(args.app)
        app = create_app(
            engine,
            token=token,
            read_only=args.read_only,
            basic_auth=basic,
            allowed_hosts=hosts,
            metrics_token=metrics_token,
            metrics_public=args.metrics_public,
        )
    except (UsageError, EngineError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import uvicorn

    uvicorn.run(
        _Closing(app, engine),
        host=args.host,
        port=args.port,
        root_path=args.root_path,
        log_level=args.log_level.lower(),
        proxy_headers=True,
        server_header=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
