"""The dashboard's outermost ASGI layer: security headers, Host allow-list and body limits.

It wraps everything else (Starlette's own error handling included), so every response (a
404, a 405, a 413, a 500) carries the same security headers as the pages.

- Host: an open dashboard (no token, no basic auth) answers only to loopback host names,
  so a page on another site that re-binds its DNS name to 127.0.0.1 cannot read it or
  enqueue through it. ``allowed_hosts`` adds names (``jobs.example.com``,
  ``*.example.com``, ``*`` for any) and then applies whatever the authentication.
- Bodies are refused while they arrive: from ``Content-Length`` when given, else by
  counting the chunks of the stream, before more than the limit is buffered (413).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.core.errors import ConfigurationError
from engine.dashboard.auth import LOGIN_PATHS, Security
from engine.dashboard.errors import DashboardError
from engine.dashboard.middleware import route_path, send_json

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "same-origin"),
    ("cache-control", "no-store"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
)
LOGIN_BODY_LIMIT = 16 * 1024
BODY_LIMIT = 2 * 1024 * 1024
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_.\-]*[a-z0-9_])?", re.ASCII)


class BodyTooLarge(DashboardError):
    status_code = 413


def normalise_host(value: str) -> str | None:
    """The host name of a Host header or an allow-list entry, lower case, without port or
    trailing dot; None when it is not a host name or IP address."""
    value = value.strip().lower()
    if value.startswith("["):
        inside, sep, rest = value[1:].partition("]")
        if not sep or (rest and not re.fullmatch(r":[0-9]{1,5}", rest, re.ASCII)):
            return None
        try:
            return str(ipaddress.IPv6Address(inside))
        except ValueError:
            return None
    name, sep, port = value.rpartition(":")
    if sep and re.fullmatch(r"[0-9]{1,5}", port, re.ASCII):
        value = name
    elif sep:
        return None
    value = value.removesuffix(".")
    if not _HOST_NAME.fullmatch(value):
        return None
    return value


def is_loopback_host(host: str) -> bool:
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_allowed_hosts(entries: Iterable[str] | str | None) -> tuple[str, ...]:
    """Allow-list entries, normalised: names, IP addresses, ``*.domain`` or ``*``.
    A string is split at commas (as the CLI flag and the environment variable give it)."""
    if entries is None:
        return ()
    if isinstance(entries, str):
        entries = entries.split(",")
    out: list[str] = []
    for raw in entries:
        if not isinstance(raw, str):
            raise ConfigurationError(f"allowed hosts must be strings, not {type(raw).__name__}")
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            out.append(entry)
            continue
        wildcard = entry.startswith("*.")
        name = (entry[2:] if wildcard else entry).removesuffix(".")
        try:
            host: str | None = str(ipaddress.ip_address(name.strip("[]")))
        except ValueError:
            host = name if _HOST_NAME.fullmatch(name) else None
        if host is None or (wildcard and ":" in host):
            raise ConfigurationError(
                f"invalid allowed host {raw!r}: give a host name or IP address without port or "
                "scheme (e.g. jobs.example.com), *.example.com for it and its subdomains, or * for any"
            )
        out.append("*." + host if wildcard else host)
    return tuple(dict.fromkeys(out))


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    for entry in allowed:
        if entry == "*" or entry == host:
            return True
        if entry.startswith("*.") and (host == entry[2:] or host.endswith(entry[1:])):
            return True
    return False


class Guard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        open_dashboard: bool,
        allowed_hosts: tuple[str, ...] = (),
        body_limit: int = BODY_LIMIT,
        login_body_limit: int = LOGIN_BODY_LIMIT,
        security: Security | None = None,
    ) -> None:
        self.app = app
        self.security = security
        """The dashboard's credentials and throttle (for introspection; the inner layer uses them)."""
        self.open_dashboard = open_dashboard
        self.allowed_hosts = allowed_hosts
        self.body_limit = body_limit
        self.login_body_limit = login_body_limit

    def _host_refusal(self, scope: Scope) -> str | None:
        """Why this request's Host is refused, or None when it is allowed."""
        if not self.open_dashboard and not self.allowed_hosts:
            return None  # authenticated: a re-bound name brings no credentials
        raw = None
        for key, value in scope.get("headers", []):
            if key.lower() == b"host":
                raw = value.decode("latin-1")
                break
        if raw is None:
            return None  # not a browser: every browser sends Host
        host = normalise_host(raw)
        if host is not None and (is_loopback_host(host) or host_allowed(host, self.allowed_hosts)):
            return None
        shown = raw[:100]
        if self.allowed_hosts:
            return (
                f"host {shown!r} is not allowed: this dashboard answers to loopback names and "
                f"{', '.join(self.allowed_hosts)} (allowed_hosts / --allowed-host / "
                "ENGINE_DASHBOARD_ALLOWED_HOSTS)"
            )
        return (
            f"host {shown!r} is not allowed: a dashboard without authentication answers only to "
            "loopback names (localhost, 127.0.0.1, [::1]); set a token, or allow the name with "
            "allowed_hosts= / --allowed-host / ENGINE_DASHBOARD_ALLOWED_HOSTS"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                out = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    out.setdefault(name, value)
            await send(message)

        refusal = self._host_refusal(scope)
        if refusal is not None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await send_json(send_with_headers, 403, refusal)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return

        limit = self.login_body_limit if route_path(scope) in LOGIN_PATHS else self.body_limit
        too_large = f"request body too large: the limit here is {limit:,} bytes"
        length = None
        for key, value in scope.get("headers", []):
            if key.lower() == b"content-length":
                length = value
        if length is not None:
            if not re.fullmatch(rb"[0-9]{1,19}", length):
                await send_json(send_with_headers, 400, "invalid Content-Length header")
                return
            if int(length) > limit:
                await send_json(send_with_headers, 413, too_large)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(too_large)
            return message

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except BodyTooLarge as exc:
            if started:
                raise
            await send_json(send_with_headers, 413, str(exc))
