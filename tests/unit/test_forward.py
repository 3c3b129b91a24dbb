"""The head a forwarded request carries to its host (relay/_forward.py), sans-IO."""

import h11

from relay._forward import FORWARDED_BY, FORWARDED_PEER, forwarded_head


def parse(data: bytes) -> h11.Request:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    return event


def request(method=b"POST", headers=()):
    return h11.Request(method=method, target=b"/cobrowse/poll/S?token=T",
                       headers=[(b"host", b"lb.example"), (b"origin", b"http://lb.example"), *headers])


def test_a_plain_request_goes_with_its_length_connection_close_and_who_forwarded_it():
    head = request(headers=[(b"content-length", b"999"), (b"connection", b"keep-alive"),
                            (b"x-forwarded-for", b"203.0.113.9"), (FORWARDED_BY, b"forged"), (FORWARDED_PEER, b"1.2.3.4")])
    parsed = parse(forwarded_head(head, "CB_Server_2", body_length=12, client_ip="10.0.0.5"))
    headers = dict(parsed.headers)
    assert parsed.method == b"POST" and parsed.target == b"/cobrowse/poll/S?token=T"
    assert headers[b"content-length"] == b"12" and headers[b"connection"] == b"close"
    assert headers[FORWARDED_BY] == b"CB_Server_2" and headers[FORWARDED_PEER] == b"10.0.0.5"  # a client's own are dropped
    assert [v for k, v in parsed.headers if k == FORWARDED_BY] == [b"CB_Server_2"]
    assert headers[b"host"] == b"lb.example" and headers[b"origin"] == b"http://lb.example"
    assert headers[b"x-forwarded-for"] == b"203.0.113.9"


def test_an_upgrade_keeps_its_connection_header_and_has_no_length():
    head = request(b"GET", [(b"connection", b"Upgrade"), (b"upgrade", b"websocket"), (b"sec-websocket-key", b"k")])
    parsed = parse(forwarded_head(head, "n", body_length=None, client_ip=None))
    headers = dict(parsed.headers)
    assert headers[b"connection"] == b"Upgrade" and headers[b"upgrade"] == b"websocket"
    assert b"content-length" not in headers and FORWARDED_PEER not in headers


import socket as _socket

import pytest
import trio

from relay import _forward


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "copy"])
async def test_the_pipe_moves_every_byte_in_order_and_ends_with_its_source(monkeypatch, splice):
    monkeypatch.setattr(_forward, "SPLICE", splice)
    source_far, source = _socket.socketpair()
    sink, sink_far = _socket.socketpair()
    for sock in (source_far, source, sink, sink_far):
        sock.setblocking(False)
    data = bytes(range(256)) * 4096 * 3  # 3 MiB: many pipe-fulls, and the sink's buffer fills up
    counter = [0]

    def moved(count):
        counter[0] += count
    received = bytearray()

    async def write():
        await trio.lowlevel.checkpoint()
        view = memoryview(data)
        while view:
            try:
                view = view[source_far.send(view):]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(source_far)
        source_far.shutdown(_socket.SHUT_WR)

    async def read():
        while True:
            try:
                chunk = sink_far.recv(65536)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sink_far)
                continue
            if not chunk:
                return
            received.extend(chunk)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            nursery.start_soon(read)
            await _forward._pipe(source, sink, moved)
            sink.shutdown(_socket.SHUT_WR)
    assert bytes(received) == data and counter[0] == len(data)
    for sock in (source_far, source, sink, sink_far):
        sock.close()
