"""Who may use the dashboard: credentials, sessions, CSRF tokens, failure throttling, read-only mode.

``middleware.py`` applies these rules to every request (pure ASGI).

- Authentication is on when a token (``ENGINE_DASHBOARD_TOKEN``) or HTTP basic credentials
  are configured (each at least :data:`MIN_SECRET_LENGTH` characters). A request is let in
  with ``Authorization: Bearer <token>``, with the session cookie the login form sets, or
  with ``Authorization: Basic`` when basic credentials are configured. ``/metrics`` also
  accepts the separate metrics token, or nothing at all when it is public. Pages redirect
  to ``/login`` (token) or ask for basic credentials; the API and ``/metrics`` answer 401.
- Sessions: ``<id>.<expiry>.<HMAC>``, signed with a key derived from the credentials (so
  every dashboard process with the same token accepts them, and changing the token ends
  them all). Logging out records the id as revoked in Redis until the session would have
  expired, so the cookie stops working in every process at once.
- CSRF: every state-changing request (POST, PUT, PATCH, DELETE) must carry the header
  ``X-CSRF-Token`` (the login and logout forms: a ``csrf_token`` field) equal to the
  ``engine_csrf`` cookie, and that value must be ``<nonce>.<HMAC>`` signed with the server
  key and bound to the request's session: a cookie someone else planted (cookie tossing
  from another port of the same host) or a token from another session does not pass.
  Requests authenticated by a bearer header are exempt: a browser never adds that header to
  a cross-site request on its own.
- Throttling: wrong tokens and basic credentials are counted per client address (IPv6 per
  /64); past :data:`FREE_FAILURES` the address is locked out for a time that doubles with
  every further failure (429 with ``Retry-After``), while other addresses carry on.
- Read-only mode refuses every state-changing request except logging in and out.
- The host application's own authentication (``create_app(auth=...)``): a callable given the
  request (a Starlette :class:`~starlette.requests.Request`, without its body) that answers
  whether it may come in: ``True``/``False`` or an awaitable of either. It replaces the token and
  basic credentials (no login page, no session cookie, no throttling: the host's auth does
  its own); a falsy answer is a 401, and an ``HTTPException`` it raises is answered as is
  (a 403, a challenge header, a redirect to the host's login page). CSRF checks stay on for
  every state-changing request it lets in (a cookie-authenticated host is exactly what they
  guard), and ``/metrics`` still takes the metrics token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import TYPE_CHECKING, TypeAlias

from starlette.requests import Request

from engine.core.clock import SYSTEM_CLOCK, Clock
from engine.core.errors import ConfigurationError
from engine.core.hooks import maybe_await

if TYPE_CHECKING:
    from engine.client.app import Engine

CSRF_COOKIE = "engine_csrf"
SESSION_COOKIE = "engine_session"
CSRF_HEADER = "x-csrf-token"
SESSION_TTL_S = 12 * 3600
MIN_SECRET_LENGTH = 16
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PUBLIC_PREFIXES = ("/static/",)
LOGIN_PATHS = ("/login", "/logout")

FREE_FAILURES = 5
"""Wrong credentials an address may send before it is locked out."""
FIRST_LOCKOUT_S = 1.0
MAX_LOCKOUT_S = 15 * 60.0
FORGET_AFTER_S = 3600.0
"""An address's failures are forgotten this long after its last one."""
MAX_TRACKED_CLIENTS = 10_000

# Strict ASCII shapes: anything else is not ours (int() on a cookie accepted '²' and raised).
_SESSION = re.compile(r"([A-Za-z0-9_-]{22})\.([0-9]{10,12})\.([A-Za-z0-9_-]{43})", re.ASCII)
_CSRF = re.compile(r"([A-Za-z0-9_-]{24})\.([A-Za-z0-9_-]{43})", re.ASCII)

AuthHook: TypeAlias = Callable[[Request], bool | Awaitable[bool]]
"""``create_app(auth=...)``: the host application's authentication, asked about each request."""


def check_secret(what: str, value: object) -> str:
    """``value`` if it is a usable secret; ConfigurationError naming ``what`` otherwise."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"the {what} must be a non-empty string")
    if len(value) < MIN_SECRET_LENGTH:
        raise ConfigurationError(
            f"the {what} is too short ({len(value)} characters): use at least {MIN_SECRET_LENGTH}, "
            "e.g. the output of: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return value


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True)
class Session:
    id: str
    expires: int


class Throttle:
    """Failed-credential counts per client, in memory, bounded.

    After :data:`FREE_FAILURES` failures a client is locked out for ``first`` seconds, twice
    as long after each further failure (up to ``longest``). While locked out its credentials
    are not even checked, so guessing learns nothing. A client's success clears its own
    count only. At most ``max_clients`` are tracked; the least recently failing are dropped
    first (a flood of addresses cannot grow memory, and each new address still gets only
    ``free`` guesses)."""

    def __init__(
        self,
        *,
        free: int = FREE_FAILURES,
        first: float = FIRST_LOCKOUT_S,
        longest: float = MAX_LOCKOUT_S,
        forget_after: float = FORGET_AFTER_S,
        max_clients: int = MAX_TRACKED_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free = free
        self.first = first
        self.longest = longest
        self.forget_after = forget_after
        self.max_clients = max_clients
        self.clock = clock
        # client -> (failures, locked until, last failure)
        self._records: OrderedDict[str, tuple[int, float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def _current(self, client: str, now: float) -> tuple[int, float, float] | None:
        record = self._records.get(client)
        if record is not None and now - record[2] > self.forget_after and now >= record[1]:
            del self._records[client]
            return None
        return record

    def retry_after(self, client: str) -> int:
        """Whole seconds until ``client`` may try again (0: it may now)."""
        now = self.clock()
        record = self._current(client, now)
        if record is None or now >= record[1]:
            return 0
        return max(1, math.ceil(record[1] - now))

    def failed(self, client: str) -> int:
        """Count a failure; returns the lockout it starts, in whole seconds (0: none yet)."""
        now = self.clock()
        record = self._current(client, now)
        failures = (record[0] if record else 0) + 1
        lock = 0.0
        if failures >= self.free:
            lock = min(self.longest, self.first * 2 ** min(failures - self.free, 64))
        self._records[client] = (failures, now + lock, now)
        self._records.move_to_end(client)
        while len(self._records) > self.max_clients:
            self._records.popitem(last=False)
        return math.ceil(lock)

    def succeeded(self, client: str) -> None:
        self._records.pop(client, None)


@dataclass(frozen=True)
class Security:
    token: str | None = None
    basic_auth: tuple[str, str] | None = None
    read_only: bool = False
    metrics_token: str | None = None
    metrics_public: bool = False
    auth: AuthHook | None = field(default=None, compare=False, repr=False)
    """The host application's authentication; when set, it decides instead of the token/basic."""
    csrf_secret: str | None = field(default=None, compare=False, repr=False)
    """A secret every process of the host shares, to sign CSRF tokens with (needed by several
    processes without a token or basic credentials to derive the key from)."""
    throttle: Throttle = field(default_factory=Throttle, compare=False, repr=False)
    clock: Clock = field(default=SYSTEM_CLOCK, compare=False, repr=False)
    """What session expiry is measured on (``create_app`` gives the engine's)."""
    _key: bytes = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.token is not None or self.basic_auth is not None or self.csrf_secret is not None:
            # Derived from the credentials: every process with the same ones accepts the same
            # sessions and CSRF tokens, and changing them invalidates all of both.
            user, password = self.basic_auth or ("", "")
            parts = [self.token or "", user, password]
            if self.csrf_secret is not None:
                parts.append(self.csrf_secret)  # (absent, the key is what it always was)
            material = "\0".join(parts).encode()
            key = hmac.new(material, b"engine-dashboard-key-v1", hashlib.sha256).digest()
        else:
            # Open dashboards (and those behind the host's auth, without csrf_secret) have no
            # secret to derive from; pages pick up a fresh CSRF token on their next refresh
            # after a restart.
            key = secrets.token_bytes(32)
        object.__setattr__(self, "_key", key)

    @property
    def enabled(self) -> bool:
        return self.token is not None or self.basic_auth is not None or self.auth is not None

    async def host_allows(self, request: Request) -> bool:
        """The host application's answer for ``request`` (its HTTPException propagates)."""
        assert self.auth is not None
        return bool(await maybe_await(self.auth(request)))

    def _mac(self, *parts: str) -> str:
        message = "\x1f".join(parts).encode("utf-8", "surrogatepass")
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest())

    # -- credentials ------------------------------------------------------------------------

    def check_token(self, candidate: str) -> bool:
        if self.token is None:
            return False
        return hmac.compare_digest(candidate.encode("utf-8", "surrogatepass"), self.token.encode())

    def check_metrics_token(self, candidate: str) -> bool:
        if self.metrics_token is None:
            return False
        return hmac.compare_digest(candidate.encode("utf-8", "surrogatepass"), self.metrics_token.encode())

    def check_basic(self, header_value: str) -> bool:
        if self.basic_auth is None:
            return False
        try:
            decoded = base64.b64decode(header_value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return False
        user, sep, password = decoded.partition(":")
        want_user, want_password = self.basic_auth
        ok_user = hmac.compare_digest(user.encode(), want_user.encode())
        ok_password = hmac.compare_digest(password.encode(), want_password.encode())
        return bool(sep) and ok_user and ok_password

    # -- sessions ---------------------------------------------------------------------------

    def new_session(self, now: float | None = None) -> str:
        sid = secrets.token_urlsafe(16)
        expires = str(int((self.clock.time() if now is None else now) + SESSION_TTL_S))
        return f"{sid}.{expires}.{self._mac('session', sid, expires)}"

    def read_session(self, value: str, now: float | None = None) -> Session | None:
        """The session a cookie value names, if it is ours, intact and unexpired (revocation
        is checked separately, in Redis)."""
        match = _SESSION.fullmatch(value) if self.token is not None else None
        if match is None:
            return None
        sid, expires, signature = match.groups()
        if not hmac.compare_digest(signature, self._mac("session", sid, expires)):
            return None
        if int(expires) < (self.clock.time() if now is None else now):
            return None
        return Session(sid, int(expires))

    def check_session(self, value: str) -> bool:
        return self.read_session(value) is not None

    # -- CSRF -------------------------------------------------------------------------------

    def new_csrf(self, binding: str) -> str:
        nonce = secrets.token_urlsafe(18)
        return f"{nonce}.{self._mac('csrf', binding, nonce)}"

    def check_csrf(self, value: str, binding: str) -> bool:
        match = _CSRF.fullmatch(value)
        if match is None:
            return False
        nonce, signature = match.groups()
        return hmac.compare_digest(signature, self._mac("csrf", binding, nonce))


async def revoke(engine: Engine, session: Session) -> None:
    """End the session in every dashboard process (recorded in Redis until it would expire)."""
    gateway = await engine.ready()
    await gateway.reads.sessions.revoke(session.id, session.expires - int(engine.clock.time()) + 1)


async def is_revoked(engine: Engine, session: Session) -> bool:
    gateway = await engine.ready()
    return await gateway.reads.sessions.is_revoked(session.id)


def csrf_binding(how: str | None, session: Session | None) -> str:
    """What a CSRF token is bound to: the session when there is one."""
    if how == "session" and session is not None:
        return "session:" + session.id
    if how in ("basic", "host"):
        return how
    return "anonymous"


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
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return "/"
    return value
