"""Connection URLs, pure: masking their passwords for logs and checking Redis URLs."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from engine.core.errors import ConfigurationError

REDIS_SCHEMES = ("redis", "rediss", "unix", "valkey", "valkeys")


def mask_url(url: str) -> str:
    """The URL with its password replaced (in the user info and in a ``?password=``
    parameter), fit for logs and error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.query:
        query = [
            (name, "***" if name.lower() == "password" else value)
            for name, value in parse_qsl(parts.query, keep_blank_values=True)
        ]
        parts = parts._replace(query=urlencode(query, safe="*"))
    if parts.password is not None:
        netloc = parts.netloc.rsplit("@", 1)[1]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{netloc}")
    return urlunsplit(parts)


def check_redis_url(url: str) -> str:
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError("Redis URL is empty: pass redis_url= or set ENGINE_REDIS_URL")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a non-numeric port
    except ValueError as exc:
        raise ConfigurationError(f"invalid Redis URL {mask_url(url)!r}: {exc}") from None
    if parts.scheme not in REDIS_SCHEMES:
        raise ConfigurationError(
            f"invalid Redis URL {mask_url(url)!r}: it must start with redis://, rediss:// "
            "or unix:// (for example redis://localhost:6379/0)"
        )
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigurationError(f"invalid Redis URL {mask_url(url)!r}: no host name")
    return url
