"""Connection URLs, pure: masking their passwords for logs, checking Redis URLs, reading the
cluster flag and mapping the valkey:// schemes to what redis-py takes."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from engine.core.errors import ConfigurationError

REDIS_SCHEMES = ("redis", "rediss", "unix", "valkey", "valkeys", "redis+sentinel", "valkey+sentinel")
SENTINEL_SCHEMES = ("redis+sentinel", "valkey+sentinel")


def mask_url(url: str) -> str:
    """The URL with its password replaced (in the user info and in a ``?password=``
    parameter), fit for logs and error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.query:
        query = [
            (name, "***" if name.lower().endswith("password") else value)
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
    if url.split("://", 1)[0].lower() in SENTINEL_SCHEMES:
        parse_sentinel_url(url)
        return url
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a non-numeric port
    except ValueError as exc:
        raise ConfigurationError(f"invalid Redis URL {mask_url(url)!r}: {exc}") from None
    if parts.scheme not in REDIS_SCHEMES:
        raise ConfigurationError(
            f"invalid Redis URL {mask_url(url)!r}: it must start with redis://, rediss://, unix:// "
            "or redis+sentinel:// (for example redis://localhost:6379/0)"
        )
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigurationError(f"invalid Redis URL {mask_url(url)!r}: no host name")
    return url


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """What a ``redis+sentinel://`` URL names: the sentinels to ask and the master to use."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    ssl: bool = False


def parse_sentinel_url(url: str) -> SentinelTarget:
    """``redis+sentinel://[user:pass@]host1:26379,host2:26379/MASTER[/DB][?sentinel_password=..&ssl=1]``
    (the password is the master's; the sentinels' is ``sentinel_password``)."""

    def bad(why: str) -> ConfigurationError:
        return ConfigurationError(
            f"invalid Sentinel URL {mask_url(url)!r}: {why} (expected redis+sentinel://"
            "[user:password@]host1:26379,host2:26379/master_name[/db])"
        )

    rest = url.split("://", 1)[1]
    netloc, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon:
            host, port = item.strip(), "26379"
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise bad(f"{item.strip() or 'an empty host'!r} is not host:port")
        sentinels.append((host, int(port)))
    parts = [unquote(p) for p in path.split("/") if p]
    if not parts:
        raise bad("no master name")
    if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise bad(f"{path!r} is not master_name[/db]")
    options = {name.lower(): value for name, value in parse_qsl(query, keep_blank_values=True)}
    return SentinelTarget(
        sentinels=tuple(sentinels),
        master=parts[0],
        db=int(parts[1]) if len(parts) == 2 else 0,
        username=username,
        password=password,
        sentinel_password=options.get("sentinel_password") or None,
        ssl=options.get("ssl", "").lower() in _TRUE,
    )


# redis-py knows redis://, rediss:// and unix:// only; valkey:// names the same protocol.
_CLIENT_SCHEMES = {"valkey": "redis", "valkeys": "rediss"}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parse_cluster_flag(value: str | None, what: str) -> bool | None:
    """``"1"``/``"true"``... True, ``"0"``/``"false"``... False, ``""``/``"auto"``/None: detect."""
    if value is None or value.strip().lower() in ("", "auto"):
        return None
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigurationError(f"{what} must be 1/true, 0/false or auto, not {value!r}")


def cluster_flag(url: str) -> bool | None:
    """The URL's ``?cluster=`` parameter (None when absent: detect at connect)."""
    for name, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        if name.lower() == "cluster":
            return parse_cluster_flag(value, f"the cluster parameter of {mask_url(url)!r}")
    return None


def client_url(url: str) -> str:
    """The URL as redis-py takes it: valkey(s):// as redis(s)://, the engine's own
    ``cluster`` parameter left out."""
    parts = urlsplit(url)
    scheme = _CLIENT_SCHEMES.get(parts.scheme, parts.scheme)
    query = [(n, v) for n, v in parse_qsl(parts.query, keep_blank_values=True) if n.lower() != "cluster"]
    return urlunsplit(parts._replace(scheme=scheme, query=urlencode(query)))
