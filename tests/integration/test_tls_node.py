"""HTTPS and WSS on a running node (SPEC 6, docs/tls.md): sessions over TLS at the sizes of real pages,
the relay's own origin is https://, a plaintext client and a bad certificate are refused with a log
line, a slow handshake falls under the handshake timeout and the connection limit, and a cluster
forwards between nodes over mutual TLS.  Certificates come from a test CA made by the test (openssl)."""

from __future__ import annotations

import logging
import socket
import ssl
import subprocess
import sys

import msgpack
import pytest
import trio

import relay
from relay._accel import OP_BINARY, encode_client_frame
from relay._netio import Broken
from helpers import running_relay
from tls_certs import TestCA

TIMEOUT_S = 30
SIZES = (1024, 64 * 1024, 1024 * 1024)


@pytest.fixture(autouse=True)
def fresh_tls_log_budget():
    """The refusal lines are rationed per second (relay._tls.TLS_LOG_LINES_PER_S): each test starts afresh."""
    from relay import _tls

    _tls._tls_log = _tls._Throttled()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    ca = TestCA(directory / "ca")
    other = TestCA(directory / "other", name="another CA")
    return {"ca": ca, "node": ca.issue("node"), "client": ca.issue("client"), "stranger": other.issue("stranger")}


def _events(caplog, event: str) -> list:
    return [record.__dict__["relay_fields"] for record in caplog.records if record.getMessage() == event]


def tls_settings(pki, *, private_ca: bool = True) -> dict:
    node = pki["node"]
    settings = dict(tls_cert_file=node.cert, tls_key_file=node.key,
                    private_tls_cert_file=node.cert, private_tls_key_file=node.key)
    if private_ca:
        settings["private_tls_ca_file"] = pki["ca"].cert
    return settings


async def test_a_session_over_https_and_wss_fans_out_every_size_intact(pki):
    with trio.fail_after(TIMEOUT_S):
        async with running_relay(**tls_settings(pki)) as (_server, listening, _plain):
            port = listening.public_port
            client = relay.Client("127.0.0.1", port, tls=pki["ca"].client_context(),
                                  origin=f"https://127.0.0.1:{port}")  # the relay's own origin, as a browser sends it
            created = await client.create_session()
            master = await client.connect(created["session"], created["master_token"])
            assert (await master.receive()).kind == "hello"
            slaves = []
            for index in range(2):
                joined = await client.join(created["session"], agent=f"agent-{index}")
                slave = await client.connect(created["session"], joined["slave_token"])
                assert (await slave.receive()).kind == "hello"
                slaves.append(slave)
            bodies = [bytes([size % 251]) * size for size in SIZES]
            for body in bodies:
                await master.send("mutation", msgpack.packb(body))
            for slave in slaves:
                got = []
                while len(got) < len(bodies):
                    envelope = await slave.receive()
                    if envelope.kind == "mutation":
                        got.append(envelope.decode())
                assert got == bodies


async def test_another_scheme_is_another_origin(pki):
    with trio.fail_after(TIMEOUT_S):
        async with running_relay(**tls_settings(pki)) as (_server, listening, _plain):
            port = listening.public_port
            client = relay.Client("127.0.0.1", port, tls=pki["ca"].client_context(), origin=f"http://127.0.0.1:{port}")
            with pytest.raises(relay.HTTPStatusError) as refused:
                await client.create_session()
            assert refused.value.status == 403


async def test_a_plaintext_request_on_the_tls_port_gets_a_400_and_a_log_line(pki, caplog):
    with trio.fail_after(TIMEOUT_S), caplog.at_level(logging.WARNING, logger="relay.tls"):
        async with running_relay(**tls_settings(pki)) as (_server, listening, _plain):
            status, _headers, body = await relay.Client("127.0.0.1", listening.public_port).request("GET", "/health")
            assert status == 400 and b"tls-required" in body
    lines = _events(caplog, "tls.plaintext_request")
    assert lines and lines[0]["listener"] == "public" and lines[0]["peer"].startswith("127.0.0.1:")


async def test_the_private_listener_requires_a_node_certificate(pki, caplog):
    with trio.fail_after(TIMEOUT_S), caplog.at_level(logging.WARNING, logger="relay.tls"):
        async with running_relay(**tls_settings(pki)) as (_server, listening, _plain):
            port = listening.private_port
            with_cert = relay.Client("127.0.0.1", port, tls=pki["ca"].client_context(pki["client"]))
            status, _headers, _body = await with_cert.request("GET", "/health")
            assert status == 200
            for refused in (pki["ca"].client_context(), pki["ca"].client_context(pki["stranger"])):
                with pytest.raises((OSError, Broken)):
                    # TLS 1.3: the client learns of the refusal on its first read.
                    await relay.Client("127.0.0.1", port, tls=refused).request("GET", "/health")
    reasons = [fields["reason"] for fields in _events(caplog, "tls.handshake_failed")]
    assert len(reasons) == 2 and all(fields["listener"] == "private"
                                     for fields in _events(caplog, "tls.handshake_failed"))
    assert "certificate" in reasons[0] and "certificate verify failed" in reasons[1], reasons


async def test_slow_handshakes_are_dropped_and_count_against_the_connection_limit(pki, caplog):
    limit = 4
    with trio.fail_after(TIMEOUT_S), caplog.at_level(logging.WARNING):
        async with running_relay(handshake_timeout_s=0.5, max_connections=limit, **tls_settings(pki)) as (
                server, listening, _plain):
            stalled = []
            for _ in range(limit):
                sock = socket.create_connection(("127.0.0.1", listening.public_port))
                sock.send(b"\x16\x03\x01")  # a ClientHello begun, never finished
                stalled.append(sock)
            await trio.sleep(0.2)
            assert server.connections == limit
            extra = socket.create_connection(("127.0.0.1", listening.public_port))
            extra.settimeout(5)
            assert await trio.to_thread.run_sync(extra.recv, 100) == b""  # over the limit: closed, no plaintext 503
            await trio.sleep(0.6)  # past the handshake timeout: the stalled ones are gone
            assert server.connections == 0
            for sock in stalled:
                sock.settimeout(5)
                assert await trio.to_thread.run_sync(sock.recv, 100) == b""
                sock.close()
            extra.close()
            client = relay.Client("127.0.0.1", listening.public_port, tls=pki["ca"].client_context())
            assert (await client.request("GET", "/health"))[0] == 200
    assert any(f["limit"] == "handshake_timeout_s" and f.get("stage") == "tls" for f in _events(caplog, "limit.hit"))


def test_unusable_certificate_files_are_a_config_error_naming_the_setting(pki, tmp_path):
    from relay._server import Server

    with pytest.raises(relay.ConfigError, match="tls_cert_file/tls_key_file"):
        Server(relay.Config(listen="127.0.0.1:0", private_listen="127.0.0.1:0", tls_cert_file=str(tmp_path / "none"),
                            tls_key_file=pki["node"].key))
    with pytest.raises(relay.ConfigError, match="private_tls_cert_file"):  # a key that is not the certificate's
        Server(relay.Config(listen="127.0.0.1:0", private_listen="127.0.0.1:0",
                            private_tls_cert_file=pki["node"].cert, private_tls_key_file=pki["client"].key))
    with pytest.raises(relay.ConfigError, match="go together"):
        relay.Config(tls_cert_file=pki["node"].cert).validate()
    with pytest.raises(relay.ConfigError, match="private_tls_ca_file needs"):
        relay.Config(private_tls_ca_file=pki["ca"].cert).validate()


async def test_relay_echo_speaks_wss(pki, tmp_path):
    """``relay echo --tls-cert-file ...`` (the server the WSS Autobahn run uses)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "relay", "echo", "--listen", "127.0.0.1:0", "--tls-cert-file", pki["node"].cert,
         "--tls-key-file", pki["node"].key], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        line = await trio.to_thread.run_sync(process.stdout.readline)
        assert b"wss://127.0.0.1:" in line, line
        port = int(line.split(b"wss://127.0.0.1:")[1].split(b"/")[0])
        with trio.fail_after(TIMEOUT_S):
            connection = await relay.ClientConnection.open("127.0.0.1", port, "/", decode=True,
                                                           headers=[("host", f"127.0.0.1:{port}")],
                                                           tls=pki["ca"].client_context())
            await connection.send_raw(encode_client_frame(OP_BINARY, b"x" * 100_000))
            opcode, payload = await connection.receive_frame()
            assert opcode == OP_BINARY and bytes(payload) == b"x" * 100_000
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.slow
async def test_a_cluster_forwards_between_nodes_over_mutual_tls(start_cluster, pki):
    node = pki["node"]
    nodes = start_cluster(private_tls=pki["ca"].client_context(pki["client"]), extra_args=[
        "--tls-cert-file", node.cert, "--tls-key-file", node.key, "--private-tls-cert-file", node.cert,
        "--private-tls-key-file", node.key, "--private-tls-ca-file", pki["ca"].cert])
    a, b, c = nodes.names
    context = pki["ca"].client_context()
    with trio.fail_after(TIMEOUT_S):
        port_a = nodes.public(a)
        created = await relay.Client("127.0.0.1", port_a, tls=context).create_session()
        joined = await relay.Client("127.0.0.1", nodes.public(b), tls=context).join(created["session"])  # forwarded
        assert joined["node"] == a
        master = await relay.Client("127.0.0.1", port_a, tls=context).connect(created["session"],
                                                                              created["master_token"])
        assert (await master.receive()).kind == "hello"
        # Through c, with the origin the browser saw (https://c): the host checks it as c's own origin.
        via_c = relay.Client("127.0.0.1", nodes.public(c), tls=context, origin=f"https://127.0.0.1:{nodes.public(c)}")
        slave = await via_c.connect(created["session"], joined["slave_token"])
        assert (await slave.receive()).kind == "hello"
        body = b"p" * (1024 * 1024)
        await master.send("snapshot", msgpack.packb(body))
        while True:
            envelope = await slave.receive()
            if envelope.kind == "snapshot":
                break
        assert envelope.decode() == body
    # relay describe-cluster asks the private listeners over TLS with a node's settings file, not without.
    settings = nodes.folder / "node.toml"
    settings.write_text(f'private_tls_cert_file = "{node.cert}"\nprivate_tls_key_file = "{node.key}"\n'
                        f'private_tls_ca_file = "{pki["ca"].cert}"\n')
    describe = [sys.executable, "-m", "relay", "describe-cluster", "--cluster", str(nodes.file)]
    agreed = subprocess.run(describe + ["--config", str(settings)], capture_output=True, text=True, timeout=30)
    assert agreed.returncode == 0, agreed.stdout + agreed.stderr
    assert sum("  UP  " in line and "DISAGREES" not in line for line in agreed.stdout.splitlines()) == 3, agreed.stdout
    plaintext = subprocess.run(describe, capture_output=True, text=True, timeout=30)
    assert plaintext.returncode == 1 and plaintext.stdout.count("  DOWN  ") == 3, plaintext.stdout
    for name in (b, c):
        assert "internal.error" not in nodes.log(name).read_text()
