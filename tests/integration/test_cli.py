"""The standalone process: python -m relay with a TOML file, flags, signals, and the ring tools."""

import dataclasses
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import relay
from relay._config import HELP, NO_FLAG, Config, format_default
from real_redis import free_port  # one source of ports, never one handed out twice

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}




def run(*args, timeout=30):
    return subprocess.run([sys.executable, "-m", "relay", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=ENV)


def http_get(port: int, path: str) -> tuple:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), head.decode("latin-1"), body


def http_post(port: int, path: str, body: bytes) -> tuple:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), head.decode("latin-1"), rest


def test_serve_with_toml_file_and_flag_overrides_then_sigterm(tmp_path):
    public, private = free_port(), free_port()
    config_file = tmp_path / "relay.toml"
    config_file.write_text(f'node_name = "from-file"\nlisten = "127.0.0.1:{public}"\n'
                           f'private_listen = "127.0.0.1:{private}"\ncookie_same_site = "Strict"\n'
                           f'shutdown_grace_s = 2.0\n')
    process = subprocess.Popen(
        [sys.executable, "-m", "relay", "serve", "--config", str(config_file), "--node-name", "CB_Server_9",
         "--log-format", "json"],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = process.stdout.readline()
        assert f"127.0.0.1:{public}" in banner and "CB_Server_9" in banner
        status, _head, body = http_get(public, "/health")
        assert status == 200 and b'"node":"CB_Server_9"' in body
        status, head, _body = http_post(public, "/cobrowse/sessions", b"{}")
        assert status == 201
        assert "gcbSessionServer=CB_Server_9" in head and "SameSite=Strict" in head
        assert http_get(private, "/metrics")[0] == 200
        assert http_get(public, "/metrics")[0] == 404
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        logs = process.stderr.read()
        assert '"event": "node.signal"' in logs and '"signal": "SIGTERM"' in logs
    finally:
        if process.poll() is None:
            process.kill()


def test_bad_settings_are_reported_not_crashed(tmp_path):
    done = run("serve", "--max-message-bytes", "lots")
    assert done.returncode == 2 and "max_message_bytes" in done.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("no_such_setting = 1\n")
    done = run("serve", "--config", str(bad))
    assert done.returncode == 2 and "no_such_setting" in done.stderr
    done = run("serve", "--config", str(tmp_path / "missing.toml"))
    assert done.returncode == 2 and "cannot read" in done.stderr


def test_help_documents_every_setting():
    done = run("serve", "--help")
    assert done.returncode == 0
    # argparse wraps (and breaks at hyphens): compare without whitespace.
    flat = "".join(done.stdout.split())
    defaults = Config.cli_defaults()
    for f in dataclasses.fields(Config):
        if f.metadata.get(NO_FLAG):
            # a secret: never on a command line (it would show in ps); --help says where it comes from
            assert "--" + f.name.replace("_", "-") not in done.stdout, f.name
            assert f.name in done.stdout, f.name
        elif f.name in Config.setting_names():
            assert "--" + f.name.replace("_", "-") in done.stdout, f.name
            default = getattr(defaults, f.name)
            shown = default if isinstance(default, str) else format_default(default)
            assert "".join(f"{f.metadata[HELP]} (default: {shown}".split()) in flat, f.name
    assert "fast path" in run("--version").stdout or "pure Python" in run("--version").stdout


@pytest.mark.parametrize("partitioner", ["murmur3", "random"])
def test_tokens_are_evenly_spaced(partitioner):
    done = run("tokens", "--nodes", "4", "--partitioner", partitioner)
    tokens = [int(line) for line in done.stdout.split()]
    if partitioner == "murmur3":
        assert tokens == [-2**63, -2**62, 0, 2**62]
    else:
        assert tokens == [0, 2**125, 2**126, 3 * 2**125]


def test_ring_prints_owners_shares_and_replicas(tmp_path):
    cluster = tmp_path / "cluster.toml"
    tokens = [-2**63, -2**63 // 3, 2**63 // 3]
    nodes = "".join(f'[[nodes]]\nname = "CB_Server_{i}"\npublic = "127.0.0.1:{8700 + 10 * i}"\n'
                    f'private = "127.0.0.1:{8701 + 10 * i}"\ninitial_token = {token}\n\n'
                    for i, token in enumerate(tokens))
    cluster.write_text(f'cluster_name = "test"\npartitioner = "murmur3"\nreplication_factor = 2\n'
                       f'state_store = "redis://127.0.0.1:6379/0"\n\n{nodes}')
    done = run("ring", "--cluster", str(cluster))
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()[2:]]
    assert [row[0] for row in rows] == ["CB_Server_0", "CB_Server_1", "CB_Server_2"]
    shares = [float(row[3].rstrip("%")) for row in rows]
    assert abs(sum(shares) - 100.0) < 0.05 and all(30 < share < 37 for share in shares)
    assert rows[0][4] == "CB_Server_0,CB_Server_1"
    ring = relay.Ring({row[0]: [int(row[2])] for row in rows}, replication_factor=2)
    assert ring.replicas(b"123")[0] == ring.owner(b"123")


def test_cli_tunes_malloc_by_default_and_can_be_told_not_to(tmp_path):
    from relay._cli import build_parser, load_config

    assert load_config(build_parser().parse_args(["serve"])).tune_malloc is True
    assert load_config(build_parser().parse_args(["serve", "--tune-malloc", "false"])).tune_malloc is False
    config_file = tmp_path / "relay.toml"
    config_file.write_text("tune_malloc = false\n")
    assert load_config(build_parser().parse_args(["serve", "--config", str(config_file)])).tune_malloc is False
    assert Config().tune_malloc is False  # an embedder's process is its own to tune
    # In a child process (the setting is process-wide): glibc accepts the thresholds.
    done = subprocess.run([sys.executable, "-c", "from relay._malloc import tune_malloc; print(tune_malloc())"],
                          capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=30)
    assert done.stdout.strip() == "True"
