"""relay/_tls.py on socket pairs: the TLSStream keeps a non-blocking socket's contract (partial sends,
BlockingIOError) for _netio's calls, and accept_tls refuses what it must with a clear log line."""

from __future__ import annotations

import logging
import socket
import ssl
import warnings

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay import _tls
from relay._netio import Yielder, recv, recv_into, send_all, send_buffers
from relay._tls import ALPN_PROTOCOLS, TLSSettings, TLSStream, accept_tls, client_context, connect_tls, server_context
from tls_certs import TestCA

TIMEOUT_S = 20


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
    return {"ca": ca, "server": ca.issue("server"), "client": ca.issue("client"), "stranger": other.issue("stranger"),
            "other": other}


def _events(caplog, event: str) -> list:
    return [record.__dict__["relay_fields"] for record in caplog.records if record.getMessage() == event]


def _pair(sndbuf: int = 0):
    ours, theirs = socket.socketpair()
    for sock in (ours, theirs):
        sock.setblocking(False)
        if sndbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    return ours, theirs


async def _handshake(pki, *, client_ca=None, client_cert=None, sndbuf: int = 0):
    """(server stream or None, client stream or the client's exception)."""
    server_sock, client_sock = _pair(sndbuf)
    context = server_context(TLSSettings(pki["server"].cert, pki["server"].key, client_ca))
    client = client_context(pki["ca"].cert, cert_file=client_cert.cert if client_cert else None,
                            key_file=client_cert.key if client_cert else None)
    result = {}

    async def client_side():
        try:
            stream = await connect_tls(client_sock, client, "localhost", 5)
            # TLS 1.3: a refused client certificate shows on the client's first read.
            result["client"] = stream
        except OSError as exc:
            result["client"] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client_side)
        result["server"] = await accept_tls(server_sock, context, timeout_s=5, listener="test", peer="peer")
    return result["server"], result["client"]


async def test_handshake_negotiates_tls12_or_later_and_alpn_http11(pki):
    with trio.fail_after(TIMEOUT_S):
        server, client = await _handshake(pki)
    assert isinstance(server, TLSStream) and isinstance(client, TLSStream)
    assert server.version() in ("TLSv1.2", "TLSv1.3")
    assert server.selected_alpn_protocol() == ALPN_PROTOCOLS[0] == "http/1.1"
    assert client.selected_alpn_protocol() == "http/1.1"


async def test_tls12_is_the_minimum(pki):
    server_sock, client_sock = _pair()
    context = server_context(TLSSettings(pki["server"].cert, pki["server"].key))
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(pki["ca"].cert)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # (that is the point)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # so that this client really offers TLS 1.1
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            errors = []

            async def client_side():
                try:
                    await connect_tls(client_sock, old, "localhost", 5)
                except OSError as exc:
                    errors.append(exc)

            nursery.start_soon(client_side)
            assert await accept_tls(server_sock, context, timeout_s=5, listener="test", peer=None) is None
    assert errors


async def test_bytes_cross_both_ways_through_netio_calls_with_partial_sends(pki):
    """A 3 MiB message as several views through a 16 KiB socket buffer: many partial sends, each
    followed by a call with the rest (the SSL_write rule), and the bytes arrive whole and in order."""
    with trio.fail_after(TIMEOUT_S):
        server, client = await _handshake(pki, sndbuf=16 * 1024)
        parts = [bytes([n % 251]) * size for n, size in enumerate((10, 1 << 20, 7, (1 << 20) + 3, 0, 1 << 20))]
        expected = b"".join(parts)
        got = bytearray()

        async def reader():
            buffer = bytearray(100_000)
            yielder = Yielder()
            while len(got) < len(expected):
                count = await recv_into(client, buffer, yielder)
                assert count, "closed early"
                got.extend(buffer[:count])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await send_buffers(server, [memoryview(part) for part in parts], Yielder())
        assert bytes(got) == expected
        await send_all(client, b"and back", Yielder())
        assert await recv(server, 100, Yielder()) == b"and back"


async def test_sendmsg_reports_blocking_until_the_ciphertext_is_taken(pki):
    with trio.fail_after(TIMEOUT_S):
        server, client = await _handshake(pki, sndbuf=8 * 1024)
    message = [b"x" * 200_000]
    with pytest.raises(BlockingIOError):  # encrypted, but the kernel took only part of it
        server.sendmsg(message)
    with pytest.raises(BlockingIOError):  # nothing read yet on the other side: still held
        server.sendmsg(message)
    drained = bytearray(300_000)
    total = 0
    sent = 0
    while not sent:
        try:
            total += client.recv_into(memoryview(drained)[total:])
        except BlockingIOError:
            pass
        try:
            sent = server.sendmsg(message)  # the same bytes again: now reported sent, not re-encrypted
        except BlockingIOError:
            pass
    assert sent == 200_000
    with trio.fail_after(TIMEOUT_S):
        while total < 200_000:
            total += await recv_into(client, memoryview(drained)[total:], Yielder())
    assert total == 200_000 and bytes(drained[:total]) == message[0]


async def test_a_plaintext_request_is_refused_with_a_log_line_and_a_plaintext_400(pki, caplog):
    server_sock, client_sock = _pair()
    context = server_context(TLSSettings(pki["server"].cert, pki["server"].key))
    client_sock.send(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
    with caplog.at_level(logging.WARNING, logger="relay.tls"), trio.fail_after(TIMEOUT_S):
        assert await accept_tls(server_sock, context, timeout_s=5, listener="public", peer="1.2.3.4:5") is None
    answer = client_sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400 ") and b"tls-required" in answer
    lines = _events(caplog, "tls.plaintext_request")
    assert lines and lines[0]["peer"] == "1.2.3.4:5" and lines[0]["listener"] == "public"


async def test_a_client_that_never_finishes_its_handshake_is_dropped_at_the_timeout(pki, caplog):
    server_sock, client_sock = _pair()
    context = server_context(TLSSettings(pki["server"].cert, pki["server"].key))
    client_sock.send(b"\x16\x03\x01")  # the start of a ClientHello, and then nothing
    with caplog.at_level(logging.WARNING), trio.fail_after(TIMEOUT_S):
        started = trio.current_time()
        assert await accept_tls(server_sock, context, timeout_s=0.3, listener="public", peer="p") is None
        assert trio.current_time() - started >= 0.3
    assert any(fields["limit"] == "handshake_timeout_s" and fields["stage"] == "tls"
               for fields in _events(caplog, "limit.hit"))


async def test_a_required_client_certificate_missing_or_from_another_ca_is_refused(pki, caplog):
    with caplog.at_level(logging.WARNING, logger="relay.tls"), trio.fail_after(TIMEOUT_S):
        server, _client = await _handshake(pki, client_ca=pki["ca"].cert)
        assert server is None
        server, _client = await _handshake(pki, client_ca=pki["ca"].cert, client_cert=pki["stranger"])
        assert server is None
        server, client = await _handshake(pki, client_ca=pki["ca"].cert, client_cert=pki["client"])
        assert isinstance(server, TLSStream)
        assert dict(item[0] for item in server.getpeercert()["subject"])["commonName"] == "client"
    reasons = [fields["reason"] for fields in _events(caplog, "tls.handshake_failed")]
    assert len(reasons) == 2, reasons
    assert "certificate" in reasons[0], reasons  # "peer did not return a certificate"
    assert "certificate verify failed" in reasons[1], reasons


async def test_the_client_refuses_a_server_certificate_of_another_ca(pki):
    server_sock, client_sock = _pair()
    context = server_context(TLSSettings(pki["stranger"].cert, pki["stranger"].key))
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: accept_tls(server_sock, context, timeout_s=5, listener="t", peer=None))
            with pytest.raises(ssl.SSLCertVerificationError):
                await connect_tls(client_sock, client_context(pki["ca"].cert), "localhost", 5)


async def test_the_end_of_the_stream_reads_as_zero(pki):
    with trio.fail_after(TIMEOUT_S):
        server, client = await _handshake(pki)
        await send_all(server, b"ping", Yielder())
        assert await recv(client, 100, Yielder()) == b"ping"  # (and TLS 1.3's tickets: nothing left unread,
        client.close()  # so this close sends close_notify and a FIN, not a reset)
        assert await recv_into(server, bytearray(100), Yielder()) == 0


def test_encrypt_chunk_is_bounded():
    assert 16 * 1024 <= _tls.ENCRYPT_CHUNK_BYTES <= 1024 * 1024


def _records(data: bytes) -> int:
    """How many TLS records ``data`` holds (5-byte headers: type, version, length)."""
    count = offset = 0
    while offset < len(data):
        offset += 5 + int.from_bytes(data[offset + 3:offset + 5], "big")
        count += 1
    assert offset == len(data)
    return count


async def test_small_pieces_share_records_and_a_large_body_fills_them(pki):
    """A frame's head, body and tail are one record, not three; 100 kB between them are the fewest
    full records (each record costs its header, its tag and a cipher call)."""
    with trio.fail_after(TIMEOUT_S):
        server, client = await _handshake(pki)
        await send_all(server, b"ping", Yielder())
        assert await recv(client, 100, Yielder()) == b"ping"  # (TLS 1.3's session tickets are read by now)
        raw = client.sock
        for pieces, records in (([b"h" * 10, b"b" * 1000, b"t" * 5], 1),
                                ([b"h" * 10, memoryview(b"b" * 100_000), b"t" * 5], -(-100_015 // 16_384))):
            assert server.sendmsg(pieces) == sum(len(piece) for piece in pieces)
            data = b""
            while True:
                try:
                    data += raw.recv(1 << 20)
                except BlockingIOError:
                    break
            assert _records(data) == records


def test_refusal_lines_are_rationed_and_the_held_back_ones_counted(caplog):
    throttle = _tls._Throttled()
    with caplog.at_level(logging.WARNING, logger="relay.tls"):
        for _ in range(_tls.TLS_LOG_LINES_PER_S + 3):
            throttle.warn("tls.handshake_failed", reason="x")
        assert len(_events(caplog, "tls.handshake_failed")) == _tls.TLS_LOG_LINES_PER_S
        throttle._windows["tls.handshake_failed"][0] -= 1.0  # a second later
        throttle.warn("tls.handshake_failed", reason="y")
    assert _events(caplog, "tls.handshake_failed")[-1]["suppressed"] == 3


async def test_ciphertext_flushed_by_a_read_is_not_encrypted_twice(pki):
    """The reader's side of the stream may send held ciphertext (after a read made protocol records):
    the writer's next call must still report its bytes sent, not encrypt them again."""
    with trio.fail_after(TIMEOUT_S):
        server, client = await _handshake(pki, sndbuf=8 * 1024)
        message = [b"y" * 150_000]
        with pytest.raises(BlockingIOError):
            server.sendmsg(message)
        received = bytearray()
        buffer = bytearray(1 << 20)
        while not server._push():  # what recv_into does after a read that produced records
            try:
                received += buffer[:client.recv_into(buffer)]
            except BlockingIOError:
                await trio.sleep(0.001)
        assert server.sendmsg(message) == 150_000  # reported now, not encrypted a second time
        await send_all(server, b"end", Yielder())
        while not received.endswith(b"end"):
            received += buffer[:await recv_into(client, buffer, Yielder())]
    assert bytes(received) == b"y" * 150_000 + b"end"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(min_value=0, max_value=300_000), min_size=1, max_size=12),
       reads=st.integers(min_value=1, max_value=70_000), sndbuf=st.sampled_from([4096, 16384, 262144]))
def test_any_split_of_sends_and_reads_delivers_the_same_bytes(pki, sizes, reads, sndbuf):
    """Random buffer lists through send_buffers (partial sends, BlockingIOError, staging into records),
    read back in random-sized reads: the same bytes, in order, once."""
    async def run():
        with trio.fail_after(TIMEOUT_S):
            server, client = await _handshake(pki, sndbuf=sndbuf)
            parts = [bytes([(n * 7 + 1) % 256]) * size for n, size in enumerate(sizes)]
            expected = b"".join(parts)
            got = bytearray()

            async def reader():
                buffer = bytearray(reads)
                while len(got) < len(expected):
                    count = await recv_into(client, buffer, Yielder())
                    assert count
                    got.extend(buffer[:count])

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                await send_buffers(server, [memoryview(part) if n % 2 else part for n, part in enumerate(parts)],
                                   Yielder())
            assert bytes(got) == expected

    trio.run(run)
