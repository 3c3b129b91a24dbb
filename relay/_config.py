"""One Config object for the CLI, the TOML file and embedders.

Every setting has the same name everywhere: the dataclass field ``max_message_bytes`` is the TOML key
``max_message_bytes`` and the CLI flag ``--max-message-bytes``.  Units are in the names
(``_bytes``, ``_s``).  Hooks exist only for embedders (a TOML file cannot hold a function).

Each field carries its own documentation in its metadata (``setting(...)`` and ``hook(...)`` below):
``python -m relay serve --help`` and the tables of docs/configuration.md are made from it
(``python scripts/config_doc.py`` writes those tables into the doc; a test keeps the doc equal to them).
"""

from __future__ import annotations

import dataclasses
import json
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

# Every default limit and timeout of relay, once: Config, the echo server, the CLI and the Client refer
# to these (the two fast-path twins keep their own DEFAULT_MAX_MESSAGE_BYTES so that each imports
# standalone; tests/unit/test_config.py holds them equal to this one).
DEFAULT_LISTEN = "127.0.0.1:8700"
DEFAULT_PRIVATE_LISTEN = "127.0.0.1:8701"
DEFAULT_ECHO_LISTEN = "127.0.0.1:9001"  # where Autobahn|Testsuite's config expects the echo server
DEFAULT_NODE_NAME = "relay-1"
DEFAULT_COOKIE_NAME = "gcbSessionServer"
DEFAULT_MAX_MESSAGE_BYTES = 16 * MiB
DEFAULT_MAX_HEADER_BYTES = 16 * KiB  # h11's own default; nginx's large_client_header_buffers is 8k per line
DEFAULT_HANDSHAKE_TIMEOUT_S = 10.0
DEFAULT_PING_INTERVAL_S = 20.0  # well below nginx's 60 s proxy_read_timeout
DEFAULT_IDLE_TIMEOUT_S = 60.0  # no byte from the peer for this long (pongs count) -> close 1001
DEFAULT_SLAVE_QUEUE_BYTES = 32 * MiB  # must hold a snapshot (<= 10 MB) plus the mutations after it
DEFAULT_BACKLOG_BYTES = 8 * MiB  # history since the last snapshot before asking the master for a new one
# The failover copy may lag this much behind a session's stream (Redis slow or away) before it is
# given up: a master keeps what it sent since the last ack, and relay.Client / client.js keep up to
# 32 MiB by default, so a copy further behind could not be completed by the master's re-sends.
DEFAULT_COPY_LAG_BYTES = 32 * MiB
DEFAULT_COPY_LAG_S = 10.0
DEFAULT_HISTORY_HARD_LIMIT_BYTES = 64 * MiB  # beyond this the history is cut until the next snapshot
DEFAULT_MAX_SLAVES_PER_SESSION = 32
DEFAULT_MAX_SESSIONS = 10_000
DEFAULT_MAX_CONNECTIONS = 20_000
DEFAULT_POLL_BODY_BYTES = 16 * MiB  # a long-poll POST may carry one message of the default maximum
DEFAULT_POLL_WAIT_S = 25.0  # below proxies' 60 s read timeout
DEFAULT_POLL_PEER_TIMEOUT_S = 60.0  # a long-poll client silent this long has left
DEFAULT_MASTER_GRACE_S = 30.0  # a master may reload its page within this without ending the session
DEFAULT_SLAVE_GRACE_S = 30.0  # a slave away this long is released (its token stops working, its place is free)
DEFAULT_JOIN_POLICY = "approve"  # SPEC 6: a session ID alone never shows the page
JOIN_POLICIES = ("approve", "ticket", "open")
DEFAULT_ADMIT_TIMEOUT_S = 120.0  # a slave the master has not admitted by then is refused (4403)
JOIN_TICKET_SECRET_ENV = "RELAY_JOIN_TICKET_SECRET"  # where the ticket secret may come from, besides the file
MIN_TICKET_SECRET_BYTES = 16
# Per client address (a call center behind one NAT creates and joins many: generous, not unbounded).
DEFAULT_CREATE_BURST = 30
DEFAULT_CREATE_RATE_PER_MIN = 60.0
DEFAULT_JOIN_BURST = 60
DEFAULT_JOIN_RATE_PER_MIN = 120.0
DEFAULT_SESSION_IDLE_TIMEOUT_S = 3600.0
DEFAULT_SHUTDOWN_GRACE_S = 10.0

Hook = Optional[Callable[..., Union[Any, Awaitable[Any]]]]

# Field metadata keys.
HELP = "help"  # one line for --help and the doc table
HOOK = "hook"  # True: an embedder's callable, not settable from TOML or the CLI
CALLED_WITH = "called_with"  # hooks: what they are called with (markdown)
CHECK = "check"  # "positive" or "non_negative": validate() refuses other values
CLI_DEFAULT = "cli_default"  # where ``python -m relay serve`` differs from Config (the process is relay's own)
NO_FLAG = "no_flag"  # True: settable from TOML, the environment or by embedders, never on the command line


def setting(default: Any, help: str, *, check: Optional[str] = None, cli_default: Any = dataclasses.MISSING,
            factory: Optional[Callable[[], Any]] = None, no_flag: bool = False) -> Any:
    """A Config field with its one-line help (and optionally a range check, a different CLI default, or
    no command-line flag: secrets must not show in ``ps``)."""
    metadata: dict = {HELP: help}
    if no_flag:
        metadata[NO_FLAG] = True
    if check is not None:
        assert check in ("positive", "non_negative"), check
        metadata[CHECK] = check
    if cli_default is not dataclasses.MISSING:
        metadata[CLI_DEFAULT] = cli_default
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def hook(called_with: str, help: str) -> Any:
    """A Config field for an embedder's callable (plain or async); None means no hook."""
    return field(default=None, metadata={HOOK: True, CALLED_WITH: called_with, HELP: help})


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
    listen: str = setting(DEFAULT_LISTEN, "public HOST:PORT (client API, WebSocket, long-poll, demo pages)")
    private_listen: str = setting(
        DEFAULT_PRIVATE_LISTEN, "private HOST:PORT (node-to-node traffic, /metrics, /sessions, /health)")
    node_name: str = setting(DEFAULT_NODE_NAME, "this node's name: the value of the sticky cookie")
    cluster: Optional[str] = setting(None, "the cluster file (TOML, docs/cluster.md); this node is --node-name in it "
                                           "and listens on that node's public and private addresses")
    failover_copy: bool = setting(
        True, "in a cluster, copy each session's stream to Redis so that a takeover continues it (docs/cluster.md)")
    copy_lag_bytes: int = setting(
        DEFAULT_COPY_LAG_BYTES, "bytes of a session's stream not yet in its failover copy before the copy is given "
                                "up (that session then fails over with a snapshot and resyncs)", check="positive")
    copy_lag_s: float = setting(
        DEFAULT_COPY_LAG_S, "seconds a stream message may wait for the failover copy before the copy is given up",
        check="positive")

    # TLS (docs/tls.md): each listener has its own certificate (they may name the same files).
    tls_cert_file: Optional[str] = setting(
        None, "PEM certificate chain of the public listener: with tls_key_file it speaks HTTPS and WSS only")
    tls_key_file: Optional[str] = setting(None, "PEM private key of tls_cert_file")
    private_tls_cert_file: Optional[str] = setting(
        None, "PEM certificate chain of the private listener: with private_tls_key_file it speaks TLS only, this "
              "node forwards to its peers' private listeners over TLS (set it alike on every node) and presents "
              "this certificate to them")
    private_tls_key_file: Optional[str] = setting(None, "PEM private key of private_tls_cert_file")
    private_tls_ca_file: Optional[str] = setting(
        None, "PEM CA bundle of the nodes: the private listener requires client certificates it signed, and "
              "peers' certificates are verified against it (unset: no client certificate, the system's CAs)")

    # The sticky routing cookie (SPEC 3).
    cookie_name: str = setting(DEFAULT_COOKIE_NAME, "name of the sticky routing cookie")
    cookie_secure: bool = setting(False, "add Secure to the cookie (forced by SameSite=None)")
    cookie_http_only: bool = setting(True, "add HttpOnly to the cookie")
    cookie_same_site: Optional[str] = setting("Lax", "SameSite attribute: Strict, Lax, None, or unset")
    cookie_partitioned: bool = setting(False, "add Partitioned (CHIPS) to the cookie; forces Secure")

    # Security: origins allowed besides the relay's own origin and requests without Origin.
    allowed_origins: list = setting(
        None, "comma-separated origins allowed besides the relay's own ('*' for any)", factory=list)

    # Limits.
    max_message_bytes: int = setting(
        DEFAULT_MAX_MESSAGE_BYTES, "largest message; a bigger one is refused from its header with 1009",
        check="positive")
    max_header_bytes: int = setting(DEFAULT_MAX_HEADER_BYTES, "largest HTTP request head (431 beyond)",
                                    check="positive")
    handshake_timeout_s: float = setting(
        DEFAULT_HANDSHAKE_TIMEOUT_S, "seconds for a client to finish its TLS handshake, and then to send each "
                                     "request head (408 beyond)", check="positive")
    ping_interval_s: float = setting(
        DEFAULT_PING_INTERVAL_S, "seconds between WebSocket pings (below a proxy's 60 s read timeout)",
        check="positive")
    idle_timeout_s: float = setting(
        DEFAULT_IDLE_TIMEOUT_S, "seconds without a byte from a WebSocket peer before it is closed (1001)",
        check="positive")
    slave_queue_bytes: int = setting(
        DEFAULT_SLAVE_QUEUE_BYTES, "bytes queued for one slave before it is resynced (then closed with 1013)",
        check="positive")
    backlog_bytes: int = setting(
        DEFAULT_BACKLOG_BYTES, "bytes since the last snapshot before the master is asked for a new one",
        check="positive")
    history_hard_limit_bytes: int = setting(
        DEFAULT_HISTORY_HARD_LIMIT_BYTES, "history kept for catch-up; beyond it late joiners wait for a snapshot",
        check="positive")
    max_slaves_per_session: int = setting(DEFAULT_MAX_SLAVES_PER_SESSION, "slaves per session (429 beyond)",
                                          check="positive")
    slave_grace_s: float = setting(
        DEFAULT_SLAVE_GRACE_S, "seconds a slave may be away (reload) before its place is released",
        check="non_negative")

    # Who may see a session (SPEC 6).
    join_policy: str = setting(
        DEFAULT_JOIN_POLICY, "approve (the master admits each slave), ticket (a signed join ticket) or open "
                             "(anyone with the ID: development only)")
    admit_timeout_s: float = setting(
        DEFAULT_ADMIT_TIMEOUT_S, "seconds a slave waits for the master's admission before it is refused (4403)",
        check="positive")
    join_ticket_secret: Optional[str] = setting(
        None, f"the HMAC secret of join tickets (join_policy ticket), at least {MIN_TICKET_SECRET_BYTES} bytes; "
              f"from the TOML file or ${JOIN_TICKET_SECRET_ENV}, never a flag", no_flag=True)
    max_sessions: int = setting(DEFAULT_MAX_SESSIONS, "sessions per node (503 beyond)", check="positive")
    max_connections: int = setting(DEFAULT_MAX_CONNECTIONS, "open connections per node (503 beyond)",
                                   check="positive")
    poll_body_bytes: int = setting(DEFAULT_POLL_BODY_BYTES, "largest long-poll POST body (413 beyond)",
                                   check="positive")
    poll_wait_s: float = setting(DEFAULT_POLL_WAIT_S, "how long a long-poll GET waits for news", check="positive")
    poll_peer_timeout_s: float = setting(
        DEFAULT_POLL_PEER_TIMEOUT_S, "a long-poll client silent this long has left", check="positive")
    master_grace_s: float = setting(
        DEFAULT_MASTER_GRACE_S, "seconds a master may be away (page load) before its session ends",
        check="non_negative")
    session_idle_timeout_s: float = setting(
        DEFAULT_SESSION_IDLE_TIMEOUT_S, "seconds without traffic before a session ends", check="positive")
    shutdown_grace_s: float = setting(
        DEFAULT_SHUTDOWN_GRACE_S, "seconds to let clients go on SIGTERM/SIGINT before closing the rest",
        check="non_negative")

    # Operations.
    log_level: str = setting("info", "debug, info, warning, error or critical")
    log_format: str = setting("text", "text (key=value, one event per line) or json (one object per line)")
    # Off for embedders (it is process-wide), on in relay's own process.
    tune_malloc: bool = setting(
        False, "keep large message buffers in the heap instead of fresh pages (glibc, process-wide: about 15% "
               "less CPU per 1 MiB message; the process keeps up to 256 MiB of freed memory)",
        cli_default=True)
    demo_pages: bool = setting(True, "serve the demo master/slave pages and client.js")

    # Per-client limits on what anyone may ask (429 with Retry-After past them), by client address.
    trusted_proxies: list = setting(
        None, "comma-separated IPs or CIDRs of load balancers whose X-Forwarded-For, -Proto and -Host are believed "
              "(none by default: the TCP peer is the client, the request's own Host and scheme its origin)",
        factory=list)
    create_burst: int = setting(DEFAULT_CREATE_BURST, "sessions one client may create at once", check="positive")
    create_rate_per_min: float = setting(
        DEFAULT_CREATE_RATE_PER_MIN, "sessions one client may create per minute after its burst", check="positive")
    join_burst: int = setting(DEFAULT_JOIN_BURST, "joins one client may make at once", check="positive")
    join_rate_per_min: float = setting(
        DEFAULT_JOIN_RATE_PER_MIN, "joins one client may make per minute after its burst", check="positive")

    # Hooks (embedders only).  Each may be a plain function or an async one.
    authorize_join: Hook = hook(
        "a `relay.JoinRequest(session_id, agent_id, join_token, origin)`",
        "anything but `True` refuses the join with 403; `relay.TicketAuthorizer(secret)` checks HMAC-signed "
        "tickets made by `relay.make_join_ticket`")
    on_session_created: Hook = hook("`(session_id, chat)`", "")
    on_session_ended: Hook = hook("`(session_id, reason)`", "")
    on_message: Hook = hook("`(session_id, kind, seq, size)` for every relayed message", "never sees a body")

    # ------------------------------------------------------------------ construction

    @classmethod
    def setting_names(cls) -> list[str]:
        """The names that a TOML file or the CLI may set (everything but the hooks)."""
        return [f.name for f in dataclasses.fields(cls) if not f.metadata.get(HOOK)]

    @classmethod
    def hook_names(cls) -> list[str]:
        """The embedders' hooks (fields marked ``hook`` in their metadata)."""
        return [f.name for f in dataclasses.fields(cls) if f.metadata.get(HOOK)]

    @classmethod
    def cli_defaults(cls) -> "Config":
        """The defaults of ``python -m relay serve``: Config's, but for the fields with a ``cli_default``."""
        return cls(**{f.name: f.metadata[CLI_DEFAULT] for f in dataclasses.fields(cls) if CLI_DEFAULT in f.metadata})

    @classmethod
    def from_mapping(cls, values: dict, *, base: Optional["Config"] = None) -> "Config":
        """A Config from ``base`` (or the defaults) with ``values`` applied and checked."""
        known = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get(HOOK)}
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
        for cert, key in (("tls_cert_file", "tls_key_file"), ("private_tls_cert_file", "private_tls_key_file")):
            if bool(getattr(self, cert)) != bool(getattr(self, key)):
                raise ConfigError(f"{cert} and {key} go together: set both or neither")
        if self.private_tls_ca_file and not self.private_tls_cert_file:
            raise ConfigError("private_tls_ca_file needs private_tls_cert_file and private_tls_key_file "
                              "(the node presents its certificate to the peers that require one)")
        self.set_cookie_value()  # node_name and cookie settings must make a safe Set-Cookie header
        for f in dataclasses.fields(self):
            check = f.metadata.get(CHECK)
            if check == "positive" and getattr(self, f.name) <= 0:
                raise ConfigError(f"{f.name} must be positive")
            if check == "non_negative" and getattr(self, f.name) < 0:
                raise ConfigError(f"{f.name} must not be negative")
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
        from relay._ratelimit import TrustedProxies

        try:
            TrustedProxies(self.trusted_proxies)
        except ValueError as exc:
            raise ConfigError(f"trusted_proxies: {exc}") from None
        if self.join_policy not in JOIN_POLICIES:
            raise ConfigError(f"join_policy must be one of {', '.join(JOIN_POLICIES)}, got {self.join_policy!r}")
        if self.join_policy == "ticket":
            secret = self.ticket_secret()
            if secret is None:
                raise ConfigError(f"join_policy ticket needs join_ticket_secret (in the config file) or "
                                  f"${JOIN_TICKET_SECRET_ENV}")
            if len(secret) < MIN_TICKET_SECRET_BYTES:
                raise ConfigError(f"the join ticket secret must be at least {MIN_TICKET_SECRET_BYTES} bytes")

    def ticket_secret(self) -> Optional[bytes]:
        """The join ticket secret: the setting, else the environment (never a flag)."""
        import os

        value = self.join_ticket_secret or os.environ.get(JOIN_TICKET_SECRET_ENV) or None
        return value.encode("utf-8") if value is not None else None

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


def flag_name(name: str) -> str:
    """The CLI flag of a setting: ``max_message_bytes`` -> ``--max-message-bytes``."""
    return "--" + name.replace("_", "-")


def size_note(name: str, value: Any) -> str:
    """``16 MiB`` for a byte count that is a whole number of KiB or MiB (and at least 1 KiB), else ``""``."""
    if not name.endswith("_bytes") or isinstance(value, bool) or not isinstance(value, int) or value < KiB:
        return ""
    for unit, size in (("MiB", MiB), ("KiB", KiB)):
        if value % size == 0:
            return f"{value // size} {unit}"
    return ""


def format_default(value: Any) -> str:
    """A default as TOML would spell it, or ``unset`` for None."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, list)):
        return json.dumps(value)
    return str(value)


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    factory = f.default_factory
    return factory() if callable(factory) else None


def _row(*cells: str) -> str:
    return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"


def settings_markdown() -> str:
    """The settings table of docs/configuration.md, made from the field metadata."""
    lines = [_row("setting (TOML, Config)", "flag", "default", "meaning"), "|---|---|---|---|"]
    for f in dataclasses.fields(Config):
        if f.metadata.get(HOOK):
            continue
        default = _default_of(f)
        shown = f"`{format_default(default)}`"
        if size_note(f.name, default):
            shown += f" ({size_note(f.name, default)})"
        if CLI_DEFAULT in f.metadata:
            shown += f" (`{format_default(f.metadata[CLI_DEFAULT])}` in the CLI)"
        flag = "none (file or environment)" if f.metadata.get(NO_FLAG) else f"`{flag_name(f.name)}`"
        lines.append(_row(f"`{f.name}`", flag, shown, f.metadata[HELP]))
    return "\n".join(lines) + "\n"


def hooks_markdown() -> str:
    """The hooks table of docs/configuration.md, made from the field metadata."""
    lines = [_row("hook", "called with", "effect"), "|---|---|---|"]
    for f in dataclasses.fields(Config):
        if f.metadata.get(HOOK):
            lines.append(_row(f"`{f.name}`", f.metadata[CALLED_WITH], f.metadata[HELP]))
    return "\n".join(lines) + "\n"


def _coerce(name: str, f: dataclasses.Field, value: Any) -> Any:
    """Convert a TOML/CLI value to the field's type, with a clear error."""
    default = _default_of(f)
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

