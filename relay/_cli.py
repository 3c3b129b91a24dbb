"""``python -m relay`` (and the ``relay`` console script): serve, echo, tokens, ring.

Every ``serve`` flag is a Config setting of the same name (``--max-message-bytes`` is
``max_message_bytes`` in the TOML file); flags override the file, which overrides the defaults.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Optional

import trio

from relay import __version__
from relay._accel import implementation, print_shadowed_build_warning
from relay._config import Config, ConfigError
from relay._logging import configure_logging, log_event
from relay._malloc import tune_malloc
from relay._ring import evenly_spaced_tokens

__all__ = ["main"]

SETTING_HELP = {
    "listen": "public HOST:PORT (client API, WebSocket, long-poll, demo pages)",
    "private_listen": "private HOST:PORT (node-to-node traffic, /metrics, /sessions, /health)",
    "node_name": "this node's name: the value of the sticky cookie",
    "cluster": "the cluster file (TOML); this node is --node-name in it",
    "cookie_name": "name of the sticky routing cookie",
    "cookie_secure": "add Secure to the cookie (forced by SameSite=None)",
    "cookie_http_only": "add HttpOnly to the cookie",
    "cookie_same_site": "SameSite attribute: Strict, Lax, None, or unset",
    "cookie_partitioned": "add Partitioned (CHIPS) to the cookie; forces Secure",
    "allowed_origins": "comma-separated origins allowed besides the relay's own ('*' for any)",
    "max_message_bytes": "largest message; a bigger one is refused from its header with 1009",
    "max_header_bytes": "largest HTTP request head (431 beyond)",
    "handshake_timeout_s": "seconds for a client to send its request head (408 beyond)",
    "ping_interval_s": "seconds between WebSocket pings (below a proxy's 60 s read timeout)",
    "idle_timeout_s": "seconds without a byte from a WebSocket peer before it is closed (1001)",
    "slave_queue_bytes": "bytes queued for one slave before it is resynced (then closed with 1013)",
    "backlog_bytes": "bytes since the last snapshot before the master is asked for a new one",
    "history_hard_limit_bytes": "history kept for catch-up; beyond it late joiners wait for a snapshot",
    "max_slaves_per_session": "slaves per session (429 beyond)",
    "max_sessions": "sessions per node (503 beyond)",
    "max_connections": "open connections per node (503 beyond)",
    "poll_body_bytes": "largest long-poll POST body (413 beyond)",
    "poll_wait_s": "how long a long-poll GET waits for news",
    "poll_peer_timeout_s": "a long-poll client silent this long has left",
    "master_grace_s": "seconds a master may be away (page load) before its session ends",
    "session_idle_timeout_s": "seconds without traffic before a session ends",
    "shutdown_grace_s": "seconds to let clients go on SIGTERM/SIGINT before closing the rest",
    "log_level": "debug, info, warning, error or critical",
    "log_format": "text (key=value, one event per line) or json (one object per line)",
    "demo_pages": "serve the demo master/slave pages and client.js",
    "tune_malloc": "keep large message buffers in the heap (glibc; process-wide; on by default in the CLI)",
}


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    defaults = Config(**CLI_DEFAULTS)
    for name in Config.setting_names():
        default = getattr(defaults, name)
        flag = "--" + name.replace("_", "-")
        help_text = f"{SETTING_HELP.get(name, name)} (default: {default})"
        if isinstance(default, bool):
            parser.add_argument(flag, dest=name, default=None, metavar="BOOL", help=help_text)
        else:
            parser.add_argument(flag, dest=name, default=None, metavar=name.upper().split("_")[-1], help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay", description="relay: the message relay core of a co-browse system.")
    parser.add_argument("--version", action="version", version=f"relay {__version__} ({implementation()})")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run a relay node",
                                description="Run a relay node. Flags override --config, which overrides defaults.")
    serve.add_argument("--config", metavar="FILE", help="a TOML file of settings (same names as the flags)")
    _add_setting_flags(serve)

    echo = commands.add_parser("echo", help="run a WebSocket echo server on the session connection code",
                               description="A WebSocket echo server built on the same frame path as sessions, "
                                           "for conformance suites such as Autobahn|Testsuite.")
    echo.add_argument("--listen", default="127.0.0.1:9001", help="HOST:PORT (default: 127.0.0.1:9001)")
    echo.add_argument("--max-message-bytes", type=int, default=16 * 1024 * 1024,
                      help="largest message (default: 16 MiB)")

    tokens = commands.add_parser("tokens", help="print evenly spaced initial tokens, one per line",
                                 description="DataStax's formulas for a single data center.")
    tokens.add_argument("--nodes", type=int, required=True, help="number of nodes")
    tokens.add_argument("--partitioner", choices=["murmur3", "random"], default="murmur3")

    ring = commands.add_parser("ring", help="print the ring of a cluster file, like nodetool ring")
    ring.add_argument("--cluster", required=True, metavar="FILE", help="the cluster file (TOML)")
    return parser


# Where the CLI's defaults differ from Config's: the process is relay's own.
CLI_DEFAULTS = {"tune_malloc": True}


def load_config(args: argparse.Namespace) -> Config:
    base = Config(**CLI_DEFAULTS)
    config = Config.from_toml(args.config, base=base) if args.config else base
    flags = {name: getattr(args, name) for name in Config.setting_names() if getattr(args, name) is not None}
    return Config.from_mapping(flags, base=config)


async def _serve_until_signalled(config: Config) -> None:
    from relay._server import serve

    shutdown = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            listening = await nursery.start(lambda task_status: serve(config, shutdown=shutdown, task_status=task_status))
            print(f"relay {__version__} ({implementation()}): node {config.node_name} on "
                  f"http://{listening.public_host}:{listening.public_port}/cobrowse/master.html "
                  f"(private {listening.private_host}:{listening.private_port})", flush=True)
            async for signum in signals:
                log_event(logging.getLogger("relay"), logging.INFO, "node.signal", signal=signal.Signals(signum).name,
                          grace_s=config.shutdown_grace_s)
                shutdown.set()
                break


def _print_ring(path: str) -> None:
    from relay._cluster import load_cluster

    cluster = load_cluster(path)
    ring = cluster.ring
    entries = list(ring.entries())
    span = 2**64 if ring.partitioner == "murmur3" else 2**127
    owned = {}
    for index, (token, node) in enumerate(entries):
        previous = entries[index - 1][0]
        owned[node] = owned.get(node, 0) + ((token - previous) % span or span)
    print(f"Cluster: {cluster.name}   Partitioner: {ring.partitioner}   Replication factor: {ring.replication_factor}")
    print(f"{'Node':<20} {'Address':<22} {'Token':>42} {'Owns':>8}  Replicas")
    for index, (token, node) in enumerate(entries):
        share = 100.0 * owned[node] / span
        replicas = ",".join(ring.walk(index, ring.replication_factor))
        print(f"{node:<20} {cluster.nodes[node].public:<22} {token:>42} {share:>7.2f}%  {replicas}")


def main(argv: Optional[list] = None) -> int:
    print_shadowed_build_warning()  # a checkout shadowing a compiled install must never pass silently
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "serve":
            config = load_config(args)
            if config.cluster is not None:
                raise ConfigError("cluster mode (--cluster) is not available in this version yet")
            configure_logging(config.log_level, config.log_format)
            if config.tune_malloc:
                tune_malloc()
            trio.run(_serve_until_signalled, config)
        elif args.command == "echo":
            from relay._server import serve_echo

            async def run_echo():
                async with trio.open_nursery() as nursery:
                    host, port = await nursery.start(
                        lambda task_status: serve_echo(args.listen, max_message_bytes=args.max_message_bytes,
                                                       task_status=task_status))
                    print(f"relay echo server on ws://{host}:{port}/ ({implementation()})", flush=True)

            try:
                trio.run(run_echo)
            except KeyboardInterrupt:
                pass
        elif args.command == "tokens":
            for token in evenly_spaced_tokens(args.nodes, args.partitioner):
                print(token)
        elif args.command == "ring":
            _print_ring(args.cluster)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"relay: error: {exc}", file=sys.stderr)
        return 2
    return 0
