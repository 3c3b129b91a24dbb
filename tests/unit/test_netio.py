"""Partial sends: what is left of a list of buffers after the kernel took some bytes."""

from relay._netio import _advance


def test_advance_drops_sent_bytes_and_empty_buffers():
    assert [bytes(b) for b in _advance([b"ab", b"cd"], 3)] == [b"d"]
    assert [bytes(b) for b in _advance([b"ab", b"cd"], 0)] == [b"ab", b"cd"]
    assert _advance([b"ab", b"cd"], 4) == []
    # An empty buffer (an empty message body) can never be "sent": it must not stall the writer.
    assert _advance([b"", b"ab", b""], 0) == [b"ab", b""]
    assert _advance([b"ab", b"", b"cd"], 2) == [b"cd"]
    assert _advance([b"", b""], 0) == []


async def test_empty_message_is_echoed_not_stalled():
    import trio

    import relay
    from relay._accel import OP_BINARY, OP_TEXT
    from relay._client import ClientConnection

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            host, port = await nursery.start(lambda task_status: relay.serve_echo(
                "127.0.0.1:0", max_message_bytes=1024, task_status=task_status))
            connection = await ClientConnection.open(host, port, "/", headers=[("host", host)])
            from relay._accel import encode_client_frame
            for opcode in (OP_BINARY, OP_TEXT, OP_BINARY):
                await connection.send_raw(encode_client_frame(opcode, b""))
            await connection.send_raw(encode_client_frame(OP_BINARY, b"last"))
            received = [await connection.receive_frame() for _ in range(4)]
            assert received == [(OP_BINARY, b""), (OP_TEXT, b""), (OP_BINARY, b""), (OP_BINARY, b"last")]
            await connection.close()
            nursery.cancel_scope.cancel()
