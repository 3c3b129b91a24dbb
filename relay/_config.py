"""One Config object for the CLI, the TOML file and embedders.

Every setting has the same name everywhere: the dataclass field ``max_message_bytes`` is the TOML key
``max_message_bytes`` and the CLI flag ``--max-message-bytes``.  Units are in the names
(``_bytes``, ``_s``).  Hooks exist only for embedders (a TOML file cannot hold a function).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional, Union

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from relay._errors import RelayError

__all__ = ["Config", "ConfigError", "JoinRequest"]

KiB = 1024
MiB = 1024 * KiB

# Defaults, named so that docs, --help and tests refer to one number.
DEFAULT_LISTEN = "127.0.0.1:8700"
DEFAULT_PRIVATE_LISTEN = "127.0.0.1:8701"
DEFAULT_NODE_NAME = "relay-1"
DEFAULT_COOKIE_NAME = "gcbSessionServer"
DEFAULT_MAX_MESSAGE_BYTES = 16 * MiB
DEFAULT_MAX_HEADER_BYTES = 16 * KiB  # h11's own default; nginx's large_client_header_buffers is 8k per line
DEFAULT_HANDSHAKE_TIMEOUT_S = 10.0
DEFAULT_PING_INTERVAL_S = 20.0  # well below nginx's 60 s proxy_read_timeout
DEFAULT_IDLE_TIMEOUT_S = 60.0  # no byte from the peer for this long (pongs count) -> close 1001
DEFAULT_SLAVE_QUEUE_BYTES = 32 * MiB  # must hold a snapshot (<= 10 MB) plus the mutations after it
DEFAULT_BACKLOG_BYTES = 8 * MiB  # history since the last snapshot before asking the master for a new one
DEFAULT_HISTORY_HARD_LIMIT_BYTES = 64 * MiB  # beyond this the history is cut until the next snapshot
DEFAULT_MAX_SLAVES_PER_SESSION = 32
DEFAULT_MAX_SESSIONS = 10_000
DEFAULT_MAX_CONNECTIONS = 20_000
DEFAULT_POLL_BODY_BYTES = 16 * MiB
DEFAULT_POLL_WAIT_S = 25.0  # below proxies' 60 s read timeout
DEFAULT_POLL_PEER_TIMEOUT_S = 60.0  # a long-poll client silent this long has left
DEFAULT_MASTER_GRACE_S = 30.0  # a master may reload its page within this without ending the session
DEFAULT_SESSION_IDLE_TIMEOUT_S = 3600.0
DEFAULT_SHUTDOWN_GRACE_S = 10.0

Hook = Optional[Callable[..., Union[Any, Awaitable[Any]]]]


@dataclass(frozen=True)
class JoinRequest:
    """What the join authorization hook is asked about."""

    session_id: str
    agent_id: Optional[str]
    join_token: Optional[str]
    origin: Optional[str]


class ConfigError(RelayError, ValueError):
    """A setting has a value that cannot work."""


@dataclass
class Config:
    """Every setting of relay.  See docs/configuration.md (and ``python -m relay serve --help``)."""

    # Network and identity.
    listen: str = DEFAULT_LISTEN
    private_listen: str = DEFAULT_PRIVATE_LISTEN
    node_name: str = DEFAULT_NODE_NAME
    cluster: Optional[str] = None  # path of the cluster file (the cluster issue)

    # The sticky routing cookie (SPEC 3).
    cookie_name: str = DEFAULT_COOKIE_NAME
    cookie_secure: bool = False
    cookie_http_only: bool = True
    cookie_same_site: Optional[str] = "Lax"
    cookie_partitioned: bool = False

    # Security: origins allowed besides the relay's own origin and requests without Origin.
    allowed_origins: list = field(default_factory=list)

    # Limits.
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    handshake_timeout_s: float = DEFAULT_HANDSHAKE_TIMEOUT_S
    ping_interval_s: float = DEFAULT_PING_INTERVAL_S
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    slave_queue_bytes: int = DEFAULT_SLAVE_QUEUE_BYTES
    backlog_bytes: int = DEFAULT_BACKLOG_BYTES
    history_hard_limit_bytes: int = DEFAULT_HISTORY_HARD_LIMIT_BYTES
    max_slaves_per_session: int = DEFAULT_MAX_SLAVES_PER_SESSION
    max_sessions: int = DEFAULT_MAX_SESSIONS
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    poll_body_bytes: int = DEFAULT_POLL_BODY_BYTES
    poll_wait_s: float = DEFAULT_POLL_WAIT_S
    poll_peer_timeout_s: float = DEFAULT_POLL_PEER_TIMEOUT_S
    master_grace_s: float = DEFAULT_MASTER_GRACE_S
    session_idle_timeout_s: float = DEFAULT_SESSION_IDLE_TIMEOUT_S
    shutdown_grace_s: float = DEFAULT_SHUTDOWN_GRACE_S

    # Operations.
    log_level: str = "info"
    log_format: str = "text"  # "text" (key=value) or "json" (one object per line)
    tune_malloc: bool = False  # process-wide glibc tuning for large messages; the CLI turns it on
    demo_pages: bool = True

    # Hooks (embedders only).  Each may be a plain function or an async one.
    authorize_join: Hook = None  # (JoinRequest) -> bool: False refuses the join with 403
    on_session_created: Hook = None  # (session_id: str, chat: bool) -> None
    on_session_ended: Hook = None  # (session_id: str, reason: str) -> None
    on_message: Hook = None  # (session_id: str, kind: str, seq: int, size: int) -> None; no body

    # ------------------------------------------------------------------ construction

    @classmethod
    def setting_names(cls) -> list:
        """The names that a TOML file or the CLI may set (everything but the hooks)."""
        return [f.name for f in dataclasses.fields(cls) if not _is_hook(f)]

    @classmethod
    def from_mapping(cls, values: dict, *, base: Optional["Config"] = None) -> "Config":
        """A Config from ``base`` (or the defaults) with ``values`` applied and checked."""
        known = {f.name: f for f in dataclasses.fields(cls) if not _is_hook(f)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        config = dataclasses.replace(base) if base is not None else cls()
        for name, value in values.items():
            setattr(config, name, _coerce(name, known[name], value))
        config.validate()
        return config

    @classmethod
    def from_toml(cls, path: str, *, base: Optional["Config"] = None) -> "Config":
        """Read a TOML file whose top-level keys are setting names (a ``[relay]`` table also works)."""
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        if isinstance(data.get("relay"), dict) and len(data) == 1:
            data = data["relay"]
        return cls.from_mapping(data, base=base)

    def validate(self) -> None:
        """Raise ConfigError for settings that cannot work together."""
        for name in ("listen", "private_listen"):
            parse_hostport(getattr(self, name), setting=name)
        if not self.node_name:
            raise ConfigError("node_name must not be empty")
        self.set_cookie_value()  # node_name and cookie settings must make a safe Set-Cookie header
        positive = [
            "max_message_bytes", "max_header_bytes", "slave_queue_bytes", "backlog_bytes",
            "history_hard_limit_bytes", "max_slaves_per_session", "max_sessions", "max_connections",
            "poll_body_bytes", "handshake_timeout_s", "ping_interval_s", "idle_timeout_s",
            "poll_wait_s", "poll_peer_timeout_s", "session_idle_timeout_s",
        ]
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        for name in ("master_grace_s", "shutdown_grace_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative")
        if self.slave_queue_bytes < self.max_message_bytes:
            raise ConfigError("slave_queue_bytes must be at least max_message_bytes")
        if self.history_hard_limit_bytes < self.backlog_bytes:
            raise ConfigError("history_hard_limit_bytes must be at least backlog_bytes")
        if self.idle_timeout_s <= self.ping_interval_s:
            raise ConfigError("idle_timeout_s must be longer than ping_interval_s")
        if self.cookie_same_site is not None and self.cookie_same_site.lower() not in ("strict", "lax", "none"):
            raise ConfigError("cookie_same_site must be Strict, Lax, None or unset")
        if self.log_level.lower() not in ("debug", "info", "warning", "error", "critical"):
            raise ConfigError("log_level must be debug, info, warning, error or critical")
        if self.log_format not in ("text", "json"):
            raise ConfigError("log_format must be text or json")


    def set_cookie_value(self) -> str:
        """The Set-Cookie value of the sticky routing cookie (this node's name)."""
        from relay._accel import build_set_cookie
        from relay._errors import CookieError

        try:
            return build_set_cookie(
                self.cookie_name, self.node_name, path="/", secure=self.cookie_secure,
                http_only=self.cookie_http_only, same_site=self.cookie_same_site,
                partitioned=self.cookie_partitioned)
        except CookieError as exc:
            raise ConfigError(f"node_name or cookie settings cannot make a safe cookie: {exc}") from None


def _is_hook(f: dataclasses.Field) -> bool:
    return f.name in ("authorize_join", "on_session_created", "on_session_ended", "on_message")


def _coerce(name: str, f: dataclasses.Field, value: Any) -> Any:
    """Convert a TOML/CLI value to the field's type, with a clear error."""
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                low = value.lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            if isinstance(value, bool):
                return value
            raise ValueError(value)
        if isinstance(default, int):
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if isinstance(default, float):
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if isinstance(default, list):
            if isinstance(value, str):
                return [item.strip() for item in value.split(",") if item.strip()]
            return [str(item) for item in value]
        if value is None or isinstance(value, str):
            if name == "cookie_same_site" and isinstance(value, str) and value.lower() in ("", "unset"):
                return None
            return value
        raise ValueError(value)
    except (TypeError, ValueError):
        raise ConfigError(f"bad value for {name}: {value!r}") from None


def parse_hostport(text: str, *, setting: str = "address") -> tuple:
    """``"HOST:PORT"`` or ``"[V6]:PORT"`` -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{setting} must be HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"{setting} has a bad port: {text!r}") from None
    if not 0 <= number <= 65535:
        raise ConfigError(f"{setting} has a bad port: {text!r}")
    return host, number
