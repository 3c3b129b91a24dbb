"""``relay describe-cluster``: ask every node of a cluster file for its view, like the seed's
``describe cluster`` (which nodes agree on the ring, which are down).

Each node answers ``GET /cluster`` on its private listener with a JSON object::

    {"node": str, "cluster_name": str, "partitioner": str, "ring_version": str,
     "state_store": "ok" | "unreachable", "live": [node names], "sessions_hosted": int,
     "epochs": {session_id: epoch}}

A node agrees when it answers as the node the file names, with the file's cluster name, partitioner
and ring version.  The nodes are asked in parallel, each with its own short timeout, so that one
silent machine costs the timeout once, not once per node.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional

import h11
import trio

from relay._config import parse_hostport

__all__ = ["DEFAULT_DESCRIBE_TIMEOUT_S", "NodeView", "ask_node", "ask_cluster", "file_ring_version",
           "format_description", "describe_cluster"]

DEFAULT_DESCRIBE_TIMEOUT_S = 2.0  # per node: connect, request and the whole answer
MAX_VIEW_BYTES = 16 * 1024 * 1024  # the epochs of every hosted session; far above what a node holds
RECV_BYTES = 64 * 1024
CLUSTER_PATH = "/cluster"
REQUIRED_STRINGS = ("node", "cluster_name", "ring_version")


@dataclass(frozen=True)
class NodeView:
    """One node's answer: its /cluster object, or why there is none."""

    name: str  # the node's name in the file
    address: str  # its private HOST:PORT
    view: Optional[dict] = None
    error: Optional[str] = None

    @property
    def up(self) -> bool:
        return self.view is not None


def file_ring_version(cluster) -> str:
    """The ring version of the file, as every node computes it (relay/_cluster.py)."""
    return cluster.ring_version


def _check_view(data) -> dict:
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    for key in REQUIRED_STRINGS:
        if not isinstance(data.get(key), str):
            raise ValueError(f"no {key!r} string")
    return data


async def _get(host: str, port: int, tls=None) -> tuple:
    """(status, body) of ``GET /cluster`` on a fresh connection (over TLS with the client context ``tls``)."""
    stream = await trio.open_tcp_stream(host, port)
    if tls is not None:
        stream = trio.SSLStream(stream, tls, server_hostname=host)
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        target_host = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        await stream.send_all(conn.send(h11.Request(method="GET", target=CLUSTER_PATH, headers=[
            ("host", target_host), ("accept", "application/json"), ("connection", "close")])))
        await stream.send_all(conn.send(h11.EndOfMessage()))
        status = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(RECV_BYTES)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_VIEW_BYTES:
                    raise ValueError(f"answer larger than {MAX_VIEW_BYTES} bytes")
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return status, bytes(body)


def _connect_error(exc: OSError) -> str:
    """The cause of a failed connection in a few words ("connection refused")."""
    # trio.open_tcp_stream reports "all attempts failed" with the attempts' errors in its cause.
    cause = exc.__cause__
    attempts = getattr(cause, "exceptions", None)  # an ExceptionGroup (a backport's on Python 3.10)
    if attempts:
        cause = attempts[0]
    error = cause if isinstance(cause, OSError) else exc
    if error.errno:
        return os.strerror(error.errno).lower()  # "connection refused", "no route to host"
    return str(error) or type(error).__name__


async def ask_node(name: str, address: str, *, timeout_s: float = DEFAULT_DESCRIBE_TIMEOUT_S, tls=None) -> NodeView:
    """The node's /cluster view, or a NodeView with the error (never raises for a node's fault)."""
    try:
        host, port = parse_hostport(address, setting=f"{name}.private")
    except ValueError as exc:
        return NodeView(name, address, error=str(exc))
    try:
        with trio.fail_after(timeout_s):
            status, body = await _get(host, port, tls)
    except trio.TooSlowError:
        return NodeView(name, address, error=f"no answer within {timeout_s:g} s")
    except trio.BrokenResourceError as exc:  # a TLS handshake that failed (its cause is the SSLError)
        return NodeView(name, address, error=f"TLS: {exc.__cause__ or exc}")
    except OSError as exc:
        return NodeView(name, address, error=_connect_error(exc))
    except (h11.RemoteProtocolError, ValueError) as exc:
        return NodeView(name, address, error=f"not an HTTP answer: {exc}")
    if status != 200:
        return NodeView(name, address, error=f"GET {CLUSTER_PATH} answered HTTP {status}")
    try:
        view = _check_view(json.loads(body))
    except ValueError as exc:
        return NodeView(name, address, error=f"GET {CLUSTER_PATH} is not a cluster view: {exc}")
    return NodeView(name, address, view=view)


async def ask_cluster(cluster, *, timeout_s: float = DEFAULT_DESCRIBE_TIMEOUT_S, tls=None) -> list:
    """Every node's NodeView, in the file's order, asked in parallel."""
    names = list(cluster.nodes)
    answers: dict = {}

    async def ask(name: str) -> None:
        answers[name] = await ask_node(name, cluster.nodes[name].private, timeout_s=timeout_s, tls=tls)

    async with trio.open_nursery() as nursery:
        for name in names:
            nursery.start_soon(ask, name)
    return [answers[name] for name in names]


def disagreements(cluster, view: dict, name: str, ring_version: str) -> list:
    """What a node's view says differently from the file (empty: it agrees)."""
    expected = {
        "node": name,
        "cluster_name": cluster.name,
        "partitioner": getattr(cluster, "partitioner", cluster.ring.partitioner),
        "ring_version": ring_version,
    }
    labels = {"node": "answers as node", "cluster_name": "cluster name", "partitioner": "partitioner",
              "ring_version": "ring version"}
    # The required strings are there (_check_view); a view without a partitioner is not held against it.
    return [f"{labels[key]} {view[key]!r} (file: {value!r})"
            for key, value in expected.items() if key in view and view[key] != value]


def format_description(cluster, answers: list) -> tuple:
    """(text, healthy): healthy when every node is up and agrees with the file."""
    ring_version = file_ring_version(cluster)
    partitioner = getattr(cluster, "partitioner", cluster.ring.partitioner)
    lines = [
        "Cluster Information:",
        f" Name: {cluster.name}",
        f" Partitioner: {partitioner}",
        f" Ring version (this file): {ring_version}",
        " Ring versions:",
    ]
    by_version: dict = {}
    for answer in answers:
        if answer.up:
            by_version.setdefault(answer.view["ring_version"], []).append(answer.name)
    for version, names in by_version.items():
        mark = "" if version == ring_version else "   <- differs from the file"
        lines.append(f"  {version}: [{', '.join(names)}]{mark}")
    down = [answer.name for answer in answers if not answer.up]
    if down:
        lines.append(f"  UNREACHABLE: [{', '.join(down)}]")
    lines.append(" Nodes:")
    width = max(len(answer.name) for answer in answers)
    address_width = max(len(answer.address) for answer in answers)
    agreeing = disagreeing = 0
    for answer in answers:
        prefix = f"  {answer.name:<{width}}  {answer.address:<{address_width}}"
        if not answer.up:
            lines.append(f"{prefix}  DOWN  {answer.error}")
            continue
        view = answer.view
        differences = disagreements(cluster, view, answer.name, ring_version)
        details = (f"live=[{', '.join(map(str, view.get('live', [])))}] "
                   f"sessions_hosted={view.get('sessions_hosted', '?')} state_store={view.get('state_store', '?')}")
        if differences:
            disagreeing += 1
            lines.append(f"{prefix}  UP    DISAGREES: {'; '.join(differences)}  {details}")
        else:
            agreeing += 1
            lines.append(f"{prefix}  UP    agrees  {details}")
    healthy = agreeing == len(answers)
    lines.append(f" {len(answers)} node(s): {agreeing} up and agreeing, {disagreeing} disagreeing, "
                 f"{len(down)} down")
    return "\n".join(lines) + "\n", healthy


def describe_cluster(cluster, *, timeout_s: float = DEFAULT_DESCRIBE_TIMEOUT_S, tls=None) -> tuple:
    """Ask the nodes and format their answers: (text, healthy).  ``tls``: the client context for private
    listeners that speak TLS (relay._tls.node_tls(config).peers)."""
    answers = trio.run(lambda: ask_cluster(cluster, timeout_s=timeout_s, tls=tls))
    return format_description(cluster, answers)
