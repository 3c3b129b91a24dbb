"""``python -m relay`` (and the ``relay`` console script): serve, echo, tokens, ring, describe-cluster,
nginx-config.

Every ``serve`` flag is a Config setting of the same name (``--max-message-bytes`` is
``max_message_bytes`` in the TOML file); flags override the file, which overrides the defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys

if sys.version_info < (3, 11):  # pragma: no cover (trio brings the backport)
    from exceptiongroup import BaseExceptionGroup
from typing import Callable, Optional

import trio

from relay import __version__
from relay._accel import implementation, print_shadowed_build_warning
from relay._config import (
    DEFAULT_ECHO_LISTEN,
    DEFAULT_MAX_MESSAGE_BYTES,
    HELP,
    NO_FLAG,
    Config,
    ConfigError,
    flag_name,
    format_default,
    size_note,
)
from relay._logging import configure_logging, log_event
from relay._fdlimit import raise_fd_limit
from relay._malloc import tune_malloc
from relay._describe import DEFAULT_DESCRIBE_TIMEOUT_S
from relay._nginx import DEFAULT_NGINX_LISTEN, DEFAULT_NGINX_TLS_LISTEN
from relay._ring import evenly_spaced_tokens

__all__ = ["main"]

SETTABLE = frozenset(Config.setting_names())
# Settings that have no flag (secrets: a command line shows in ``ps``); the TOML file or the environment sets them.
FLAGGED = frozenset(f.name for f in dataclasses.fields(Config) if f.name in SETTABLE and not f.metadata.get(NO_FLAG))

def _setting_help(f: dataclasses.Field, default: object) -> str:
    """A field's one-line help with its default (the CLI's, which may differ from Config's)."""
    note = size_note(f.name, default)
    shown = (default if isinstance(default, str) else format_default(default)) + (f" = {note}" if note else "")
    # argparse %-formats help texts.
    return f"{f.metadata[HELP]} (default: {shown})".replace("%", "%%")


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per Config setting, its help and default from the field's metadata."""
    defaults = Config.cli_defaults()
    for f in dataclasses.fields(Config):
        if f.name not in FLAGGED:
            continue
        default = getattr(defaults, f.name)
        # default=None: only the flags given on the command line override the TOML file.
        parser.add_argument(flag_name(f.name), dest=f.name, default=None, metavar=_metavar(f.name, default),
                            help=_setting_help(f, default))


def _metavar(name: str, default: object) -> str:
    if isinstance(default, bool):
        return "BOOL"
    if name.endswith("_bytes"):
        return "BYTES"
    if name.endswith("_s"):
        return "SECONDS"
    if isinstance(default, int):
        return "N"
    return name.upper().split("_")[-1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay", description="relay: the message relay core of a co-browse system.")
    parser.add_argument("--version", action="version", version=f"relay {__version__} ({implementation()})")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    unflagged = [f for f in dataclasses.fields(Config) if f.name in SETTABLE and f.name not in FLAGGED]
    serve = commands.add_parser(
        "serve", help="run a relay node",
        description="Run a relay node. Flags override --config, which overrides defaults.",
        epilog="settings without a flag (set them in the --config file): "
               + "; ".join(f"{f.name}: {f.metadata[HELP]}" for f in unflagged).replace("%", "%%"))
    serve.add_argument("--config", metavar="FILE", help="a TOML file of settings (same names as the flags)")
    _add_setting_flags(serve)

    echo = commands.add_parser("echo", help="run a WebSocket echo server on the session connection code",
                               description="A WebSocket echo server built on the same frame path as sessions, "
                                           "for conformance suites such as Autobahn|Testsuite.")
    echo.add_argument("--listen", default=DEFAULT_ECHO_LISTEN, help=f"HOST:PORT (default: {DEFAULT_ECHO_LISTEN})")
    echo.add_argument("--max-message-bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES, metavar="BYTES",
                      help=f"largest message (default: {DEFAULT_MAX_MESSAGE_BYTES} = "
                           f"{size_note('max_message_bytes', DEFAULT_MAX_MESSAGE_BYTES)})")
    echo.add_argument("--tls-cert-file", metavar="FILE", help="PEM certificate chain: speak WSS only (with --tls-key-file)")
    echo.add_argument("--tls-key-file", metavar="FILE", help="PEM private key of --tls-cert-file")

    tokens = commands.add_parser("tokens", help="print evenly spaced initial tokens, one per line",
                                 description="DataStax's formulas for a single data center.")
    tokens.add_argument("--nodes", type=int, required=True, help="number of nodes")
    tokens.add_argument("--partitioner", choices=["murmur3", "random"], default="murmur3")

    ring = commands.add_parser(
        "ring", help="print the ring of a cluster file, like nodetool ring",
        description="Prints the ring of the cluster file (docs/ring.md). Per node (the summary, the default when "
                    "a node has several tokens): its address, its token (or how many it has), Owns: the share "
                    "of session IDs it owns as primary, Effective: the share it holds as one of the "
                    "replication_factor replicas, and Replicas: the replicas of its range (single-token nodes). "
                    "Per token (--tokens, the default when every node has one token): one line per token in "
                    "ring order with the node's Owns and the replicas of the range ending at that token, like "
                    "nodetool ring. The first line gives the balance: the largest Owns over the mean.")
    ring.add_argument("--cluster", required=True, metavar="FILE", help="the cluster file (TOML)")
    layout = ring.add_mutually_exclusive_group()
    layout.add_argument("--tokens", dest="layout", action="store_const", const="tokens",
                        help="one line per token, in ring order")
    layout.add_argument("--summary", dest="layout", action="store_const", const="summary",
                        help="one line per node, in file order")

    describe = commands.add_parser(
        "describe-cluster", help="ask every node of a cluster file whether it agrees on the ring",
        description="Asks each node of the cluster file, on its private address, for its view (GET /cluster) "
                    "and prints the cluster name, partitioner, ring version and, per node, UP (agrees or "
                    "DISAGREES) or DOWN, like the seed's `describe cluster`. Exit status 0 when every node "
                    "is up and agrees, 1 otherwise.")
    describe.add_argument("--cluster", required=True, metavar="FILE", help="the cluster file (TOML)")
    describe.add_argument("--timeout", type=float, default=DEFAULT_DESCRIBE_TIMEOUT_S, metavar="SECONDS",
                          help=f"per node, for the whole answer (default: {DEFAULT_DESCRIBE_TIMEOUT_S:g})")
    describe.add_argument("--config", metavar="FILE",
                          help="a node's relay TOML file: with its private_tls_* settings the nodes are asked over "
                               "TLS, presenting that certificate (docs/tls.md)")

    nginx = commands.add_parser(
        "nginx-config", help="print an nginx configuration that balances a cluster",
        description="Prints a complete nginx.conf for the cluster file, like the seed's Sample 2 (or its Sample 1 "
                    "with --upstream-tls: HTTPS to the nodes too): one upstream "
                    "per node (the others as backups), the gcbSessionServer cookie map, WebSocket upgrade, "
                    "Host and X-Forwarded-* for relay's origin check, buffers and timeouts for relay's "
                    "limits, fallback on 502/504 and rate limits on creates and joins. Run it with "
                    "nginx -p DIR -c FILE -g 'daemon off; pid DIR/nginx.pid; error_log DIR/error.log;'. "
                    "Every node must list nginx's address in trusted_proxies.")
    nginx.add_argument("--cluster", required=True, metavar="FILE", help="the cluster file (TOML)")
    nginx.add_argument("--listen", default=str(DEFAULT_NGINX_LISTEN), metavar="PORT",
                       help=f"where nginx listens for HTTP: PORT or HOST:PORT (default: {DEFAULT_NGINX_LISTEN})")
    nginx.add_argument("--server-name", default="_", metavar="NAME",
                       help="nginx's server_name (default: _, any name)")
    nginx.add_argument("--tls-cert", metavar="FILE", help="a certificate: add an HTTPS listener (TLS ends at nginx)")
    nginx.add_argument("--tls-key", metavar="FILE", help="the certificate's private key")
    nginx.add_argument("--upstream-tls", action="store_true",
                       help="reach the nodes over HTTPS, like the seed's Sample 1 (their public listeners have "
                            "tls_cert_file)")
    nginx.add_argument("--upstream-ca", metavar="FILE",
                       help="with --upstream-tls: verify the nodes' certificates against this CA")
    nginx.add_argument("--upstream-tls-name", metavar="NAME",
                       help="with --upstream-ca: the name every node's certificate carries (checked, and sent as SNI)")
    nginx.add_argument("--no-rate-limits", action="store_true",
                       help="leave out the per-client limits on session creates and joins (load tests from one address)")
    nginx.add_argument("--tls-listen", default=str(DEFAULT_NGINX_TLS_LISTEN), metavar="PORT",
                       help=f"where nginx listens for HTTPS with --tls-cert (default: {DEFAULT_NGINX_TLS_LISTEN})")
    nginx.add_argument("--runtime-dir", metavar="DIR",
                       help="put nginx's access log and temporary files in DIR (default: nginx's built-in paths)")
    nginx.add_argument("--config", metavar="FILE",
                       help="the nodes' relay TOML file: its cookie_name, ping_interval_s, poll_wait_s, "
                            "poll_body_bytes and max_message_bytes shape the output (default: relay's defaults)")
    return parser


def load_config(args: argparse.Namespace) -> Config:
    base = Config.cli_defaults()
    config = Config.from_toml(args.config, base=base) if args.config else base
    flags = {name: getattr(args, name) for name in FLAGGED if getattr(args, name) is not None}
    return Config.from_mapping(flags, base=config)


async def _serve_until_signalled(config: Config) -> None:
    from relay._server import serve

    shutdown = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            listening = await nursery.start(lambda task_status: serve(config, shutdown=shutdown, task_status=task_status))
            print(f"relay {__version__} ({implementation()}): node {config.node_name} on "
                  f"{'https' if config.tls_cert_file else 'http'}://{listening.public_host}:{listening.public_port}"
                  f"/cobrowse/master.html "
                  f"(private {listening.private_host}:{listening.private_port})", flush=True)
            async for signum in signals:
                log_event(logging.getLogger("relay"), logging.INFO, "node.signal", signal=signal.Signals(signum).name,
                          grace_s=config.shutdown_grace_s)
                shutdown.set()
                break


def cmd_serve(args: argparse.Namespace) -> None:
    """``relay serve``: one node until SIGINT/SIGTERM, then a graceful shutdown."""
    config = load_config(args)
    configure_logging(config.log_level, config.log_format)
    if config.tune_malloc:
        tune_malloc()
    raise_fd_limit()  # every connection holds a descriptor; the node warns at start if it is still too low
    trio.run(_serve_until_signalled, config)


def cmd_echo(args: argparse.Namespace) -> None:
    """``relay echo``: the WebSocket echo server until Ctrl-C."""
    from relay._server import serve_echo
    from relay._tls import TLSSettings

    if bool(args.tls_cert_file) != bool(args.tls_key_file):
        raise ConfigError("--tls-cert-file and --tls-key-file go together")
    tls = TLSSettings(args.tls_cert_file, args.tls_key_file) if args.tls_cert_file else None

    async def run_echo():
        async with trio.open_nursery() as nursery:
            host, port = await nursery.start(
                lambda task_status: serve_echo(args.listen, max_message_bytes=args.max_message_bytes, tls=tls,
                                               task_status=task_status))
            print(f"relay echo server on {'wss' if tls else 'ws'}://{host}:{port}/ ({implementation()})", flush=True)

    try:
        trio.run(run_echo)
    except KeyboardInterrupt:
        pass


def cmd_tokens(args: argparse.Namespace) -> None:
    """``relay tokens``: evenly spaced initial tokens, one per line."""
    for token in evenly_spaced_tokens(args.nodes, args.partitioner):
        print(token)


def cmd_ring(args: argparse.Namespace) -> None:
    """``relay ring``: the ring of a cluster file, like nodetool ring (per node or per token)."""
    from relay._cluster import load_cluster

    cluster = load_cluster(args.cluster)
    ring = cluster.ring
    layout = args.layout or ("summary" if any(len(spec.tokens) > 1 for spec in cluster.nodes.values()) else "tokens")
    owns = ring.shares()
    print(f"Cluster: {cluster.name}   Partitioner: {ring.partitioner}   Replication factor: "
          f"{ring.replication_factor}   Ring version: {cluster.ring_version}   "
          f"Balance (largest Owns / mean): {max(owns.values()) * len(owns):.4f}")
    name_width = max(len("Node"), *map(len, cluster.nodes))
    address_width = max(len("Address"), *(len(spec.public) for spec in cluster.nodes.values()))
    if layout == "tokens":
        token_width = max(len("Token"), *(len(str(token)) for token, _node in ring.entries()))
        print(f"{'Node':<{name_width}}  {'Address':<{address_width}}  {'Token':>{token_width}}  {'Owns':>7}  Replicas")
        for token, node in ring.entries():
            print(f"{node:<{name_width}}  {cluster.nodes[node].public:<{address_width}}  {token:>{token_width}}  "
                  f"{100 * owns[node]:>6.2f}%  {','.join(ring.replicas_of_token(token))}")
        return
    effective = ring.effective_shares()
    shown = {node: str(spec.tokens[0]) if len(spec.tokens) == 1 else f"{len(spec.tokens)} tokens"
             for node, spec in cluster.nodes.items()}
    token_width = max(len("Token(s)"), *map(len, shown.values()))
    print(f"{'Node':<{name_width}}  {'Address':<{address_width}}  {'Token(s)':>{token_width}}  {'Owns':>7}  "
          f"{'Effective':>9}  Replicas")
    for node, spec in cluster.nodes.items():
        replicas = ",".join(ring.replicas_of_token(spec.tokens[0])) if len(spec.tokens) == 1 else "(per token: --tokens)"
        print(f"{node:<{name_width}}  {spec.public:<{address_width}}  {shown[node]:>{token_width}}  "
              f"{100 * owns[node]:>6.2f}%  {100 * effective[node]:>8.2f}%  {replicas}")


def cmd_describe_cluster(args: argparse.Namespace) -> int:
    """``relay describe-cluster``: every node's view of the cluster; 1 unless all are up and agree."""
    from relay._cluster import load_cluster
    from relay._describe import describe_cluster

    if not args.timeout > 0:
        raise ConfigError(f"--timeout must be positive, got {args.timeout:g}")
    tls = None
    if args.config:
        from relay._tls import node_tls

        tls = node_tls(Config.from_toml(args.config, base=Config.cli_defaults())).peers
    text, healthy = describe_cluster(load_cluster(args.cluster), timeout_s=args.timeout, tls=tls)
    print(text, end="", flush=True)
    return 0 if healthy else 1


def cmd_nginx_config(args: argparse.Namespace) -> None:
    """``relay nginx-config``: an nginx.conf for the cluster file, on stdout."""
    from relay._cluster import load_cluster
    from relay._nginx import nginx_config

    node = Config.from_toml(args.config, base=Config.cli_defaults()) if args.config else Config.cli_defaults()
    print(nginx_config(load_cluster(args.cluster), listen=args.listen, server_name=args.server_name,
                       cookie_name=node.cookie_name, tls_cert=args.tls_cert, tls_key=args.tls_key,
                       tls_listen=args.tls_listen, runtime_dir=args.runtime_dir,
                       ping_interval_s=node.ping_interval_s, poll_wait_s=node.poll_wait_s,
                       poll_body_bytes=node.poll_body_bytes, max_message_bytes=node.max_message_bytes,
                       rate_limits=not args.no_rate_limits, upstream_tls=args.upstream_tls,
                       upstream_ca=args.upstream_ca, upstream_tls_name=args.upstream_tls_name), end="")


# A command returns None (success) or its exit status.
COMMANDS: dict[str, Callable[[argparse.Namespace], Optional[int]]] = {
    "serve": cmd_serve,
    "echo": cmd_echo,
    "tokens": cmd_tokens,
    "ring": cmd_ring,
    "describe-cluster": cmd_describe_cluster,
    "nginx-config": cmd_nginx_config,
}


def main(argv: Optional[list[str]] = None) -> int:
    print_shadowed_build_warning()  # a checkout shadowing a compiled install must never pass silently
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        status = COMMANDS[args.command](args)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"relay: error: {exc}", file=sys.stderr)
        return 2
    except BaseExceptionGroup as group:
        # trio wraps what a task raised (a cluster that refuses this node, a port in use) in a group
        refusal = _first_leaf(group, (ConfigError, OSError))
        if refusal is None:
            raise
        print(f"relay: error: {refusal}", file=sys.stderr)
        return 2
    return status or 0


def _first_leaf(group: BaseExceptionGroup, types: tuple):
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found = _first_leaf(exc, types)
            if found is not None:
                return found
        elif isinstance(exc, types):
            return exc
    return None
