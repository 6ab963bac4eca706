"""Authentication, CSRF protection, read-only mode and security headers (pure ASGI middleware).

- Authentication is on when a token (``ENGINE_DASHBOARD_TOKEN``) or HTTP basic credentials
  are configured. A request is let in with ``Authorization: Bearer <token>``, with the
  session cookie the login form sets (an HMAC of an expiry time keyed by the token, never the
  token itself), or with ``Authorization: Basic`` when basic credentials are configured.
  Pages redirect to ``/login`` (token) or ask for basic credentials; the API and
  ``/metrics`` answer 401 JSON.
- CSRF: every state-changing request (POST, PUT, PATCH, DELETE) must carry the header
  ``X-CSRF-Token`` equal to the ``engine_csrf`` cookie (double submit; the pages embed it,
  API clients get it from ``GET /api/csrf``). Requests authenticated by a bearer header are
  exempt: a browser never adds that header to a cross-site request on its own.
- Read-only mode refuses every state-changing request except logging in and out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import quote

import msgspec
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSRF_COOKIE = "engine_csrf"
SESSION_COOKIE = "engine_session"
CSRF_HEADER = "x-csrf-token"
SESSION_TTL_S = 12 * 3600
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PUBLIC_PREFIXES = ("/static/",)
LOGIN_PATHS = ("/login", "/logout")

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class Security:
    token: str | None = None
    basic_auth: tuple[str, str] | None = None
    read_only: bool = False

    @property
    def enabled(self) -> bool:
        return self.token is not None or self.basic_auth is not None

    # -- credentials ------------------------------------------------------------------------

    def check_token(self, candidate: str) -> bool:
        if self.token is None:
            return False
        return hmac.compare_digest(candidate.encode(), self.token.encode())

    def check_basic(self, header_value: str) -> bool:
        if self.basic_auth is None:
            return False
        try:
            decoded = base64.b64decode(header_value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        want_user, want_password = self.basic_auth
        ok_user = hmac.compare_digest(user.encode(), want_user.encode())
        ok_password = hmac.compare_digest(password.encode(), want_password.encode())
        return bool(sep) and ok_user and ok_password

    def _sign(self, expires: int) -> str:
        assert self.token is not None
        message = f"engine-dashboard-session:{expires}".encode()
        return hmac.new(self.token.encode(), message, hashlib.sha256).hexdigest()

    def new_session(self, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + SESSION_TTL_S)
        return f"{expires}.{self._sign(expires)}"

    def check_session(self, value: str) -> bool:
        if self.token is None:
            return False
        expires_text, _, signature = value.partition(".")
        if not expires_text.isdigit() or int(expires_text) < time.time():
            return False
        return hmac.compare_digest(signature, self._sign(int(expires_text)))

    def authenticate(self, headers: dict[str, str], cookies: dict[str, str]) -> str | None:
        """How the request proved who it is: "bearer", "basic", "session", or None."""
        authorization = headers.get("authorization", "")
        scheme, _, credentials = authorization.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self.check_token(credentials.strip()):
            return "bearer"
        if scheme == "basic" and self.check_basic(credentials.strip()):
            return "basic"
        session = cookies.get(SESSION_COOKIE)
        if session and self.check_session(session):
            return "session"
        return None


def route_path(scope: Scope) -> str:
    """The path inside this app (without the prefix it is mounted under)."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path or "/"


def parse_cookies(raw: str) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for chunk in raw.split(";"):
        key, sep, value = chunk.strip().partition("=")
        if sep and key:
            cookies[key] = value.strip().strip('"')
    return cookies


def cookie_header(
    name: str, value: str, *, path: str, secure: bool, max_age: int | None = None, http_only: bool = True
) -> str:
    jar: SimpleCookie = SimpleCookie()
    jar[name] = value
    morsel = jar[name]
    morsel["path"] = path or "/"
    morsel["samesite"] = "Strict"
    if http_only:
        morsel["httponly"] = True
    if secure:
        morsel["secure"] = True
    if max_age is not None:
        morsel["max-age"] = max_age
    return morsel.OutputString()


def safe_next(value: str | None) -> str:
    """A local path to go to after logging in (never another site)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, security: Security) -> None:
        self.app = app
        self.security = security

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        cookies = parse_cookies(headers.get("cookie", ""))
        path = route_path(scope)
        base: str = scope.get("root_path", "")
        secure = scope.get("scheme") == "https"
        new_csrf = None
        csrf = cookies.get(CSRF_COOKIE, "")
        if len(csrf) < 20:
            csrf = new_csrf = secrets.token_urlsafe(32)
        method = scope.get("method", "GET")
        state = scope.setdefault("state", {})
        state["csrf_token"] = csrf
        state["base"] = base
        state["path"] = path
        state["read_only"] = self.security.read_only
        state["auth_enabled"] = self.security.enabled

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                out.setdefault("content-security-policy", CSP)
                out.setdefault("x-content-type-options", "nosniff")
                out.setdefault("x-frame-options", "DENY")
                out.setdefault("referrer-policy", "same-origin")
                out.setdefault("cache-control", "no-store")
                if new_csrf is not None:
                    cookie = cookie_header(CSRF_COOKIE, new_csrf, path=base or "/", secure=secure)
                    out.append("set-cookie", cookie)
            await send(message)

        if path.startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send_with_headers)
            return

        how = self.security.authenticate(headers, cookies) if self.security.enabled else "open"
        state["auth"] = how
        if how is None and path not in LOGIN_PATHS:
            await self._refuse_unauthenticated(scope, path, base, headers, send_with_headers)
            return
        if method in UNSAFE_METHODS and path not in LOGIN_PATHS:
            if self.security.read_only:
                await _json(send_with_headers, 403, "the dashboard is read-only: changes are disabled")
                return
            given = headers.get(CSRF_HEADER, "")
            valid = bool(given) and new_csrf is None and hmac.compare_digest(given.encode(), csrf.encode())
            if how != "bearer" and not valid:
                await _json(
                    send_with_headers,
                    403,
                    "CSRF check failed: send the X-CSRF-Token header with the value of the "
                    f"{CSRF_COOKIE} cookie (GET {base}/api/csrf gives both)",
                )
                return
        await self.app(scope, receive, send_with_headers)

    async def _refuse_unauthenticated(
        self, scope: Scope, path: str, base: str, headers: dict[str, str], send: Send
    ) -> None:
        wants_html = "text/html" in headers.get("accept", "")
        is_api = path == "/api" or path.startswith("/api/") or path == "/metrics"
        if self.security.token is not None and wants_html and not is_api:
            target = path + (
                ("?" + scope["query_string"].decode("latin-1")) if scope.get("query_string") else ""
            )
            location = f"{base}/login?next={quote(target, safe='')}"
            await send(
                {
                    "type": "http.response.start",
                    "status": 303,
                    "headers": [(b"location", location.encode("latin-1")), (b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        challenge = 'Basic realm="engine dashboard"' if self.security.basic_auth else 'Bearer realm="engine"'
        await _json(
            send,
            401,
            "authentication required: send Authorization: Bearer <ENGINE_DASHBOARD_TOKEN>"
            + (" or HTTP basic credentials" if self.security.basic_auth else "")
            + (", or log in at " + f"{base}/login" if self.security.token else ""),
            extra=[(b"www-authenticate", challenge.encode())],
        )


async def _json(
    send: Send, status: int, message: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = msgspec.json.encode({"error": message, "status": status})
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
