"""``relay describe-cluster`` against small HTTP servers on 127.0.0.1 that answer GET /cluster with
the JSON contract of a node's private listener (they stand in for relay's own endpoint)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h11
import trio

from real_nginx import free_port
from relay._cluster import load_cluster
from relay._describe import ask_cluster, file_ring_version, format_description

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def write_cluster(path: Path, nodes) -> None:
    lines = ['cluster_name = "cobrowse"', 'partitioner = "murmur3"', "replication_factor = 2",
             'state_store = "redis://127.0.0.1:6379/0"']
    for index, (name, private) in enumerate(nodes):
        lines += ["[[nodes]]", f'name = "{name}"', f'public = "127.0.0.1:{free_port()}"',
                  f'private = "127.0.0.1:{private}"', f"initial_token = {index * 1000}"]
    path.write_text("\n".join(lines) + "\n")


def view(node, cluster, **changes) -> dict:
    answer = {"node": node, "cluster_name": cluster.name, "partitioner": "murmur3",
              "ring_version": file_ring_version(cluster), "state_store": "ok", "live": list(cluster.nodes),
              "sessions_hosted": 3, "epochs": {"abc": 1}}
    answer.update(changes)
    return answer


async def serve_view(listener, answer, *, status=200, silent=False):
    """Answer every connection's GET /cluster with ``answer`` (JSON), or never answer (``silent``)."""
    async def handle(stream):
        conn = h11.Connection(h11.SERVER)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                assert event.target == b"/cluster"
            if isinstance(event, h11.EndOfMessage):
                break
        if silent:
            await trio.sleep_forever()
        body = json.dumps(answer).encode()
        await stream.send_all(conn.send(h11.Response(status_code=status, headers=[
            ("content-type", "application/json"), ("content-length", str(len(body)))])))
        await stream.send_all(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
        await stream.aclose()

    await trio.serve_listeners(handle, [listener])


async def open_listener():
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    return listeners[0], listeners[0].socket.getsockname()[1]


async def run_cli(*args, timeout_s=20):
    with trio.fail_after(timeout_s):
        return await trio.run_process([sys.executable, "-m", "relay", *args], capture_stdout=True,
                                      capture_stderr=True, check=False, cwd=ROOT, env=ENV)


async def test_agreeing_disagreeing_down_and_silent_nodes(tmp_path):
    with trio.fail_after(30):
        listeners = [await open_listener() for _ in range(3)]
        closed_port = free_port()  # nothing listens there
        path = tmp_path / "cluster.toml"
        write_cluster(path, [("CB_Server_1", listeners[0][1]), ("CB_Server_2", listeners[1][1]),
                             ("CB_Server_3", closed_port), ("CB_Server_4", listeners[2][1])])
        cluster = load_cluster(str(path))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_view, listeners[0][0], view("CB_Server_1", cluster))
            nursery.start_soon(serve_view, listeners[1][0], view("CB_Server_2", cluster, ring_version="0ldring",
                                                                  cluster_name="other"))
            nursery.start_soon(lambda: serve_view(listeners[2][0], {}, silent=True))
            done = await run_cli("describe-cluster", "--cluster", str(path), "--timeout", "0.5")
            nursery.cancel_scope.cancel()
        out = done.stdout.decode()
        assert done.returncode == 1, out + done.stderr.decode()
        assert out.startswith("Cluster Information:\n Name: cobrowse\n Partitioner: murmur3\n")
        assert f" Ring version (this file): {file_ring_version(cluster)}\n" in out
        lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  CB_")}
        assert "UP    agrees" in lines["CB_Server_1"] and "sessions_hosted=3" in lines["CB_Server_1"]
        assert "DISAGREES" in lines["CB_Server_2"]
        assert "ring version '0ldring'" in lines["CB_Server_2"] and "cluster name 'other'" in lines["CB_Server_2"]
        assert "DOWN  connection refused" in lines["CB_Server_3"]
        assert "DOWN  no answer within 0.5 s" in lines["CB_Server_4"]
        assert f"  {file_ring_version(cluster)}: [CB_Server_1]\n" in out
        assert "  0ldring: [CB_Server_2]   <- differs from the file\n" in out
        assert "4 node(s): 1 up and agreeing, 1 disagreeing, 2 down" in out


async def test_exit_status_zero_when_every_node_is_up_and_agrees(tmp_path):
    with trio.fail_after(30):
        listeners = [await open_listener() for _ in range(2)]
        path = tmp_path / "cluster.toml"
        write_cluster(path, [("A", listeners[0][1]), ("B", listeners[1][1])])
        cluster = load_cluster(str(path))
        async with trio.open_nursery() as nursery:
            for (listener, _port), name in zip(listeners, ["A", "B"]):
                nursery.start_soon(serve_view, listener, view(name, cluster))
            done = await run_cli("describe-cluster", "--cluster", str(path))
            answers = await ask_cluster(cluster, timeout_s=2)
            nursery.cancel_scope.cancel()
        assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
        assert "2 node(s): 2 up and agreeing, 0 disagreeing, 0 down" in done.stdout.decode()
        assert [answer.view["node"] for answer in answers] == ["A", "B"]


async def test_a_node_that_answers_as_another_or_not_with_a_view_disagrees_or_is_down(tmp_path):
    with trio.fail_after(30):
        listeners = [await open_listener() for _ in range(3)]
        path = tmp_path / "cluster.toml"
        write_cluster(path, [("A", listeners[0][1]), ("B", listeners[1][1]), ("C", listeners[2][1])])
        cluster = load_cluster(str(path))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_view, listeners[0][0], view("B", cluster))  # the file says A is here
            nursery.start_soon(serve_view, listeners[1][0], {"status": "ok"})  # not a /cluster view
            nursery.start_soon(lambda: serve_view(listeners[2][0], {"error": "not-found"}, status=404))
            answers = await ask_cluster(cluster, timeout_s=2)
            nursery.cancel_scope.cancel()
        text, healthy = format_description(cluster, answers)
        assert not healthy
        assert "answers as node 'B' (file: 'A')" in text
        assert answers[1].error == "GET /cluster is not a cluster view: no 'node' string"
        assert answers[2].error == "GET /cluster answered HTTP 404"


def test_the_ring_version_of_the_file(tmp_path):
    path = tmp_path / "cluster.toml"
    write_cluster(path, [("A", 1), ("B", 2)])
    cluster = load_cluster(str(path))
    version = file_ring_version(cluster)
    assert len(version) == 16 and version == cluster.ring_version == file_ring_version(load_cluster(str(path)))
    moved = path.read_text().replace("initial_token = 1000", "initial_token = 1001")
    path.write_text(moved)
    assert file_ring_version(load_cluster(str(path))) != version


def test_bad_arguments_are_refused_clearly(tmp_path):
    missing = subprocess.run([sys.executable, "-m", "relay", "describe-cluster", "--cluster", str(tmp_path / "no.toml")],
                             capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=30)
    assert missing.returncode == 2 and "cannot read cluster file" in missing.stderr
    path = tmp_path / "cluster.toml"
    write_cluster(path, [("A", 1)])
    zero = subprocess.run([sys.executable, "-m", "relay", "describe-cluster", "--cluster", str(path), "--timeout", "0"],
                          capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=30)
    assert zero.returncode == 2 and "--timeout must be positive" in zero.stderr
