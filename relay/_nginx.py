"""``relay nginx-config``: an nginx configuration for a cluster file (a pure function of its input).

The shape is the seed's Sample 2 ("SSL acceleration": TLS, if any, ends at nginx; plain HTTP to the
nodes) or, with ``upstream_tls``, its Sample 1 (HTTPS from nginx to the nodes too: the nodes'
public listeners speak TLS, ``tls_cert_file``), made to work with relay as it is:

- one upstream per node, the node first and every other node as ``backup``: a client whose cookie
  names a dead node falls through to a live one (which takes its session over, or forwards it);
- one upstream of all nodes for clients without a (known) cookie;
- ``map $cookie_gcbSessionServer`` from the cookie value (a node name) to that node's upstream;
- the original ``Host`` and scheme passed on (``X-Forwarded-Proto``, ``X-Forwarded-For``), so that a
  browser's Origin matches what relay sees: relay believes them only from its ``trusted_proxies``;
- WebSocket upgrade, buffers and body sizes for relay's largest messages, timeouts above relay's
  ping interval and long-poll wait, and per-client rate limits on session creates and joins.

Open-source nginx has only passive health checks (``max_fails``/``fail_timeout``,
``proxy_next_upstream``): a dead node costs the first request that meets it one connect failure, at
most ``proxy_connect_timeout`` when the host does not answer at all.
"""

from __future__ import annotations

import math
import re
from typing import Optional, Union

from relay._config import (
    DEFAULT_COOKIE_NAME,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_PING_INTERVAL_S,
    DEFAULT_POLL_BODY_BYTES,
    DEFAULT_POLL_WAIT_S,
    ConfigError,
    KiB,
    MiB,
    parse_hostport,
)

__all__ = ["nginx_config", "DEFAULT_NGINX_LISTEN", "DEFAULT_NGINX_TLS_LISTEN"]

DEFAULT_NGINX_LISTEN = 80
DEFAULT_NGINX_TLS_LISTEN = 443
# A node that refuses or does not accept the connection within this is skipped for the next one.
PROXY_CONNECT_TIMEOUT_S = 2
# After one failure a node is left out of its upstreams for this long (nginx's passive health check),
# as a primary and as a backup alike (nginx's default is 10 s, also for backups).  Short, because a
# node that was killed comes back within seconds and its clients' cookies name it: with 10 s, a
# few kills in a row left every server of an upstream marked failed, and nginx answered 502 ("no
# live upstreams") for up to 10 s to clients whose nodes were all up (the chaos test).  A node that
# stays dead costs one failed connect (at most PROXY_CONNECT_TIMEOUT_S) per this long per worker.
UPSTREAM_FAIL_TIMEOUT_S = 3
# proxy_read_timeout as a multiple of the longest silence relay allows itself on a connection: the
# WebSocket ping interval, or the wait of a long-poll GET.
READ_TIMEOUT_FACTOR = 3
# Per client address (nginx's $binary_remote_addr): the suggested limits of the public API.
CREATE_RATE_PER_MIN = 30
CREATE_BURST = 10
JOIN_RATE_PER_MIN = 120
JOIN_BURST = 30
RATE_ZONE_BYTES = 10 * MiB  # about 160,000 client addresses per zone
# Response buffers: one long-poll answer of a maximal message fits in memory (no temporary file).
PROXY_BUFFER_BYTES = 1 * MiB
MIN_PROXY_BUFFERS = 4  # proxy_busy_buffers_size (2 buffers) must stay below all buffers but one
PROXY_HEADER_BUFFER_BYTES = 64 * KiB  # response head, and each direction of a WebSocket tunnel
CLIENT_BODY_BUFFER_BYTES = 1 * MiB  # larger long-poll bodies go to a temporary file

# Node names become map keys and upstream names: keep them to characters nginx needs no quoting for.
NODE_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+\Z")
# $cookie_NAME: nginx variable names are letters, digits and underscores.
COOKIE_NAME_PATTERN = re.compile(r"[A-Za-z0-9_]+\Z")
# server_name: one or more names (or nginx patterns) separated by spaces.
SERVER_NAME_PATTERN = re.compile(r"[^\s;{}'\"#]+( [^\s;{}'\"#]+)*\Z")
PATH_PATTERN = re.compile(r"[^\s;{}'\"#$]+\Z")
TLS_NAME_PATTERN = re.compile(r"[A-Za-z0-9.-]+\Z")  # a DNS name (or an IP address) in the nodes' certificates
UPSTREAM_TLS_PROTOCOLS = "TLSv1.2 TLSv1.3"  # relay's own minimum is TLS 1.2
UPSTREAM_VERIFY_DEPTH = 2  # node certificate, intermediate, root


def _size(nbytes: int) -> str:
    """nginx's size syntax, exact: 16m, 64k, or bytes."""
    if nbytes % MiB == 0:
        return f"{nbytes // MiB}m"
    if nbytes % KiB == 0:
        return f"{nbytes // KiB}k"
    return str(nbytes)


def _listen_directive(listen: Union[int, str], what: str) -> str:
    """``8080`` or ``"127.0.0.1:8080"`` / ``"[::1]:8080"`` as nginx's listen argument."""
    if isinstance(listen, int) or (isinstance(listen, str) and listen.isdigit()):
        port = int(listen)
        if not 1 <= port <= 65535:
            raise ConfigError(f"{what} must be a port between 1 and 65535 or HOST:PORT, got {listen!r}")
        return str(port)
    host, port = parse_hostport(str(listen), setting=what)
    if port == 0:
        raise ConfigError(f"{what} needs a real port, got {listen!r}")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _upstream_address(address: str, node: str) -> str:
    host, port = parse_hostport(address, setting=f"{node}.public")
    if port == 0:
        raise ConfigError(f"{node}.public needs a real port for nginx, got {address!r}")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_names(nodes: dict) -> None:
    seen: dict = {}
    for name in nodes:
        if not NODE_NAME_PATTERN.match(name):
            raise ConfigError(f"node name {name!r} cannot be used in an nginx map: use letters, digits, "
                              f"'.', '_' and '-'")
        # nginx's map compares strings ignoring case: two such names would be the same key.
        other = seen.setdefault(name.lower(), name)
        if other != name:
            raise ConfigError(f"node names {other!r} and {name!r} differ only in case: nginx's cookie map "
                              f"cannot tell them apart")


def _check_path(path: str, what: str) -> str:
    if not PATH_PATTERN.match(path):
        raise ConfigError(f"{what} {path!r} must not contain spaces, quotes, ';', '{{', '}}', '#' or '$'")
    return path


def upstream_name(node: str) -> str:
    """The upstream of one node: the node first, the others as backups."""
    return f"relay_node_{node}"


CLUSTER_UPSTREAM = "relay_cluster"


def nginx_config(cluster, *, listen: Union[int, str] = DEFAULT_NGINX_LISTEN, server_name: str = "_",
                 cookie_name: str = DEFAULT_COOKIE_NAME, tls_cert: Optional[str] = None,
                 tls_key: Optional[str] = None, tls_listen: Union[int, str] = DEFAULT_NGINX_TLS_LISTEN,
                 runtime_dir: Optional[str] = None, ping_interval_s: float = DEFAULT_PING_INTERVAL_S,
                 poll_wait_s: float = DEFAULT_POLL_WAIT_S, poll_body_bytes: int = DEFAULT_POLL_BODY_BYTES,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, rate_limits: bool = True,
                 upstream_tls: bool = False, upstream_ca: Optional[str] = None,
                 upstream_tls_name: Optional[str] = None) -> str:
    """The text of an nginx.conf that balances ``cluster`` (a :class:`relay._cluster.Cluster`).

    It needs nothing beside itself: no ``user``, ``pid`` or top-level ``error_log`` (give them with
    ``-g`` or let the defaults apply), no ``include mime.types``.  ``runtime_dir`` puts the access log
    and nginx's temporary files there (else nginx's built-in paths: /var/log/nginx, /var/lib/nginx on
    Debian).  ``tls_cert`` and ``tls_key`` add an HTTPS listener on ``tls_listen`` (TLS ends at nginx;
    the nodes are reached over plain HTTP, like the seed's Sample 2).  ``upstream_tls`` reaches the
    nodes over HTTPS instead (the seed's Sample 1, its default); ``upstream_ca`` makes nginx verify their
    certificates against that CA, for ``upstream_tls_name``, a name every node's certificate carries
    (nginx picks the node after it has fixed the name it checks).  ``rate_limits=False`` leaves out the
    per-client limits on creates and joins (for a load test from one address).
    """
    nodes = cluster.nodes
    if not nodes:
        raise ConfigError("the cluster has no nodes")
    _check_names(nodes)
    if not COOKIE_NAME_PATTERN.match(cookie_name):
        raise ConfigError(f"cookie name {cookie_name!r} cannot be an nginx $cookie_ variable: use letters, "
                          f"digits and '_'")
    if not SERVER_NAME_PATTERN.match(server_name):
        raise ConfigError(f"server name {server_name!r} is not a valid nginx server_name")
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("TLS needs both a certificate and its key")
    if (upstream_ca is not None or upstream_tls_name is not None) and not upstream_tls:
        raise ConfigError("upstream_ca and upstream_tls_name need upstream_tls (HTTPS to the nodes)")
    if (upstream_ca is None) != (upstream_tls_name is None):
        raise ConfigError("verifying the nodes' certificates needs both the CA and the name they carry")
    if upstream_tls_name is not None and not TLS_NAME_PATTERN.match(upstream_tls_name):
        raise ConfigError(f"upstream TLS name {upstream_tls_name!r} must be a DNS name or an IP address")
    scheme = "https" if upstream_tls else "http"
    listens = [_listen_directive(listen, "listen")]
    if tls_cert is not None:
        listens.append(_listen_directive(tls_listen, "TLS listen") + " ssl")
    addresses = {name: _upstream_address(spec.public, name) for name, spec in nodes.items()}
    read_timeout_s = math.ceil(READ_TIMEOUT_FACTOR * max(ping_interval_s, poll_wait_s))
    buffers = max(MIN_PROXY_BUFFERS, math.ceil(max_message_bytes / PROXY_BUFFER_BYTES))
    cluster_name = getattr(cluster, "name", "?")

    out: list = []
    add = out.append
    add(f"# nginx configuration for the relay cluster {cluster_name!r} ({len(nodes)} node(s)),")
    if upstream_tls:
        add("# made by `relay nginx-config`; the shape of the seed's Sample 1 (HTTPS to the nodes as well).")
    else:
        add("# made by `relay nginx-config`; the shape of the seed's Sample 2 (TLS, if any, ends here).")
    add("# Run it as it is, for example:")
    add("#   nginx -p DIR -c DIR/nginx.conf -g 'daemon off; pid DIR/nginx.pid; error_log DIR/error.log;'")
    add("# Every node must list this load balancer's address in trusted_proxies, so that it believes the")
    add("# Host and X-Forwarded-Proto passed below (a browser's Origin is checked against them).")
    add("")
    add("events {")
    add("    worker_connections 4096;  # each WebSocket holds two: the client's and the node's")
    add("}")
    add("")
    add("http {")
    add("    default_type application/octet-stream;")
    add("    map_hash_bucket_size 128;  # room for long node names (the seed's comment)")
    add("    log_format relay '$remote_addr [$time_local] \"$request\" $status $body_bytes_sent '")
    add("                     '\"$http_user_agent\" \"$http_x_forwarded_for\" upstream=$upstream_addr '")
    add("                     'cookie=$cookie_" + cookie_name + "';")
    if runtime_dir is not None:
        directory = _check_path(runtime_dir.rstrip("/") or "/", "runtime directory")
        add(f"    access_log {directory}/access.log relay;")
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            add(f"    {kind}_temp_path {directory}/{kind}_temp;")
    else:
        add("    # (no runtime directory given: nginx's built-in access log and temporary file paths)")
    add("")
    add("    # One upstream per node: the node first, the others as backups, so that a client whose cookie")
    add("    # names a dead node falls through to a live one (which hosts or forwards its session).")
    for name in nodes:
        add(f"    upstream {upstream_name(name)} {{")
        add(f"        server {addresses[name]} max_fails=1 fail_timeout={UPSTREAM_FAIL_TIMEOUT_S}s;")
        for other in nodes:
            if other != name:
                add(f"        server {addresses[other]} max_fails=1 fail_timeout={UPSTREAM_FAIL_TIMEOUT_S}s backup;")
        add("    }")
    add("    # Clients without a cookie of a known node: any node (a node routes every session to its host).")
    add(f"    upstream {CLUSTER_UPSTREAM} {{")
    for name in nodes:
        add(f"        server {addresses[name]} max_fails=1 fail_timeout={UPSTREAM_FAIL_TIMEOUT_S}s;")
    add("    }")
    add("")
    add(f"    # relay sets the cookie {cookie_name}=<node name> on create, join and chat creation; nginx reads")
    add("    # it as relay.parse_cookie does (first match).  Map keys are compared ignoring case.")
    add(f"    map $cookie_{cookie_name} $relay_upstream {{")
    add(f"        default {CLUSTER_UPSTREAM};")
    for name in nodes:
        add(f"        {name} {upstream_name(name)};")
    add("    }")
    add("")
    add("    # WebSocket: pass the upgrade on (http://nginx.org/en/docs/http/websocket.html).")
    add("    map $http_upgrade $connection_upgrade {")
    add("        default upgrade;")
    add("        ''      close;")
    add("    }")
    add("    # The browser's Host, port included ($host drops the port, and relay compares the Origin")
    add("    # header with scheme://Host); $host only when the client sent no Host at all.")
    add("    map $http_host $relay_host {")
    add("        ''      $host;")
    add("        default $http_host;")
    add("    }")
    add("")
    add("    # Per-client rate limits of the public API (relay has its own per-client limits too, by the")
    add("    # address in X-Forwarded-For).  Only POSTs count: an empty key is not limited.")
    add("    map $request_method $relay_limit_key {")
    add("        POST    $binary_remote_addr;")
    add("        default '';")
    add("    }")
    add(f"    limit_req_zone $relay_limit_key zone=relay_creates:{_size(RATE_ZONE_BYTES)} "
        f"rate={CREATE_RATE_PER_MIN}r/m;")
    add(f"    limit_req_zone $relay_limit_key zone=relay_joins:{_size(RATE_ZONE_BYTES)} "
        f"rate={JOIN_RATE_PER_MIN}r/m;")
    add("    limit_req_status 429;")
    add("")
    add("    server {")
    for directive in listens:
        add(f"        listen {directive};")
    add(f"        server_name {server_name};")
    if tls_cert is not None:
        add(f"        ssl_certificate {_check_path(tls_cert, 'TLS certificate')};")
        add(f"        ssl_certificate_key {_check_path(tls_key, 'TLS key')};")
    add("")
    add(f"        # Long-poll POST bodies up to relay's poll_body_bytes ({_size(poll_body_bytes)}).  Exactly that: relay")
    add("        # answers a larger body at once and closes, which nginx, still sending it, would report as 502.")
    add(f"        client_max_body_size {_size(poll_body_bytes)};")
    add(f"        client_body_buffer_size {_size(CLIENT_BODY_BUFFER_BYTES)};")
    add("")
    add("        proxy_http_version 1.1;")
    add("        proxy_set_header Upgrade $http_upgrade;")
    add("        proxy_set_header Connection $connection_upgrade;")
    add("        proxy_set_header Host $relay_host;")
    add("        proxy_set_header X-Forwarded-Proto $scheme;")
    add("        # Set, not passed through: a client's own X-Forwarded-Host must not reach relay.")
    add("        proxy_set_header X-Forwarded-Host $relay_host;")
    add("        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;")
    add("        proxy_set_header X-Real-IP $remote_addr;")
    add(f"        # Buffers for relay's largest message ({_size(max_message_bytes)}: DOM snapshots and CSS).")
    add(f"        proxy_buffer_size {_size(PROXY_HEADER_BUFFER_BYTES)};")
    add(f"        proxy_buffers {buffers} {_size(PROXY_BUFFER_BYTES)};")
    add(f"        proxy_busy_buffers_size {_size(2 * PROXY_BUFFER_BYTES)};")
    add("        # A node that refuses, cannot be reached in time, or answers 502/504: try the next one.")
    add("        # (nginx retries a WebSocket only until its 101; after that a dead node drops the")
    add("        # connection and the client reconnects, through here, to a live one.)")
    add(f"        proxy_connect_timeout {PROXY_CONNECT_TIMEOUT_S}s;")
    add("        proxy_next_upstream error timeout http_502 http_504;")
    add(f"        proxy_next_upstream_tries {len(nodes)};")
    add(f"        # Above relay's ping interval ({ping_interval_s:g} s, ping_interval_s) and long-poll wait")
    add(f"        # ({poll_wait_s:g} s, poll_wait_s): {READ_TIMEOUT_FACTOR} times the longer, so that only a dead node is cut.")
    add(f"        proxy_read_timeout {read_timeout_s}s;")
    add(f"        proxy_send_timeout {read_timeout_s}s;")
    if upstream_tls:
        add("        # HTTPS to the nodes (their public listeners have tls_cert_file): the seed's Sample 1.")
        add(f"        proxy_ssl_protocols {UPSTREAM_TLS_PROTOCOLS};")
        add("        proxy_ssl_session_reuse on;")
        if upstream_ca is not None:
            add(f"        proxy_ssl_trusted_certificate {_check_path(upstream_ca, 'upstream CA')};")
            add("        proxy_ssl_verify on;")
            add(f"        proxy_ssl_verify_depth {UPSTREAM_VERIFY_DEPTH};")
            add(f"        proxy_ssl_name {upstream_tls_name};")
            add("        proxy_ssl_server_name on;")
        else:
            add("        # (the nodes' certificates are not verified: give --upstream-ca and --upstream-tls-name)")
    add("")
    add("        location = /cobrowse/sessions {")
    if rate_limits:
        add(f"            limit_req zone=relay_creates burst={CREATE_BURST} nodelay;")
    add(f"            proxy_pass {scheme}://$relay_upstream;")
    add("        }")
    add("        location ~ ^/cobrowse/sessions/[^/]+/join$ {")
    if rate_limits:
        add(f"            limit_req zone=relay_joins burst={JOIN_BURST} nodelay;")
    add(f"            proxy_pass {scheme}://$relay_upstream;")
    add("        }")
    add("        location /cobrowse/ {")
    add(f"            proxy_pass {scheme}://$relay_upstream;")
    add("        }")
    add("        location = /health {")
    add(f"            proxy_pass {scheme}://{CLUSTER_UPSTREAM};")
    add("        }")
    add("        # Nothing else: the private listeners (/metrics, /sessions, /cluster) stay private.")
    add("        location / {")
    add("            return 404;")
    add("        }")
    add("    }")
    add("}")
    return "\n".join(out) + "\n"
