"""Checked-in corpus of WebSocket frame streams a server may receive, good and bad.

Each case: ``description``; ``data`` (the raw bytes, as a client would send them); optional
``max_message_size`` and ``client_side``; ``events``, the events expected before the stream ends or
fails; ``close_code``, the close code of the expected ``RemoteProtocolError`` (``None`` when the
stream is valid).  The bytes are built here by hand, independently of the code under test.
"""

from __future__ import annotations

MASK = bytes.fromhex("37fa213d")  # the mask key of RFC 6455 section 5.7's examples


def masked(payload: bytes, key: bytes = MASK) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def frame(first: int, payload: bytes = b"", *, mask: bool = True, length_bytes: bytes = b"") -> bytes:
    """A frame with first byte ``first``; ``length_bytes`` forces a raw length encoding."""
    if length_bytes:
        header = bytes((first,)) + length_bytes
        if mask:
            header = bytes((header[0], header[1] | 0x80)) + header[2:]
    else:
        n = len(payload)
        if n < 126:
            header = bytes((first, n))
        elif n < 65536:
            header = bytes((first, 126)) + n.to_bytes(2, "big")
        else:
            header = bytes((first, 127)) + n.to_bytes(8, "big")
        if mask:
            header = bytes((header[0], header[1] | 0x80)) + header[2:]
    if mask:
        return header + MASK + masked(payload)
    return header + payload


FIN = 0x80
TEXT, BINARY, CLOSE, PING, PONG, CONT = 1, 2, 8, 9, 10, 0

CASES = [
    # ---- valid streams ----
    dict(
        description="RFC 6455 5.7: masked 'Hello'",
        data=bytes.fromhex("818537fa213d7f9f4d5158"),
        events=[(1, b"Hello")],
        close_code=None,
    ),
    dict(
        description="RFC 6455 5.7: fragmented unmasked 'Hel' 'lo' read by a client",
        data=bytes.fromhex("010348656c80026c6f"),
        client_side=True,
        events=[(1, b"Hello")],
        close_code=None,
    ),
    dict(
        description="empty text, empty binary, empty ping, empty close",
        data=frame(FIN | TEXT) + frame(FIN | BINARY) + frame(FIN | PING) + frame(FIN | CLOSE),
        events=[(1, b""), (2, b""), (9, b""), (8, b"")],
        close_code=None,
    ),
    dict(
        description="ping between two fragments, empty middle fragment",
        data=frame(BINARY, b"ab") + frame(FIN | PING, b"x") + frame(CONT) + frame(FIN | CONT, b"c"),
        events=[(9, b"x"), (2, b"abc")],
        close_code=None,
    ),
    dict(
        description="UTF-8 split inside a code point across fragments",
        data=frame(TEXT, "é".encode()[:1]) + frame(FIN | CONT, "é".encode()[1:] + "😀".encode()),
        events=[(1, "é😀".encode())],
        close_code=None,
    ),
    dict(
        description="16-bit length 126 and 64-bit length 65536 (the smallest of each)",
        data=frame(FIN | BINARY, b"a" * 126) + frame(FIN | BINARY, b"b" * 65536),
        events=[(2, b"a" * 126), (2, b"b" * 65536)],
        close_code=None,
    ),
    dict(
        description="control frame of exactly 125 bytes",
        data=frame(FIN | PONG, b"p" * 125),
        events=[(10, b"p" * 125)],
        close_code=None,
    ),
    dict(
        description="close with code 1000 and a UTF-8 reason",
        data=frame(FIN | CLOSE, b"\x03\xe8" + "bye ☃".encode()),
        events=[(8, b"\x03\xe8" + "bye ☃".encode())],
        close_code=None,
    ),
    dict(
        description="message of exactly max_message_size in three fragments",
        data=frame(TEXT, b"aaaa") + frame(CONT, b"bbb") + frame(FIN | CONT, b"ccc"),
        max_message_size=10,
        events=[(1, b"aaaabbbccc")],
        close_code=None,
    ),
    dict(
        description="control frames do not count against max_message_size",
        data=frame(FIN | PING, b"x" * 20),
        max_message_size=4,
        events=[(9, b"x" * 20)],
        close_code=None,
    ),
    # ---- 1002: framing faults ----
    dict(description="RSV1 set", data=frame(FIN | 0x40 | TEXT, b"x"), events=[], close_code=1002),
    dict(description="RSV2 set", data=frame(FIN | 0x20 | BINARY, b"x"), events=[], close_code=1002),
    dict(description="RSV3 set on ping", data=frame(FIN | 0x10 | PING), events=[], close_code=1002),
    *[
        dict(description=f"reserved opcode {op}", data=frame(FIN | op, b"x"), events=[], close_code=1002)
        for op in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15)
    ],
    dict(description="unmasked frame from a client", data=frame(FIN | TEXT, b"hi", mask=False),
         events=[], close_code=1002),
    dict(description="masked frame from the server", data=frame(FIN | TEXT, b"hi"), client_side=True,
         events=[], close_code=1002),
    dict(description="ping of 126 bytes", data=frame(FIN | PING, b"x" * 126), events=[], close_code=1002),
    dict(description="fragmented ping (FIN=0)", data=frame(PING, b"x"), events=[], close_code=1002),
    dict(description="fragmented close (FIN=0)", data=frame(CLOSE), events=[], close_code=1002),
    dict(description="continuation with no message", data=frame(FIN | CONT, b"x"), events=[],
         close_code=1002),
    dict(description="text inside a fragmented binary message",
         data=frame(BINARY, b"a") + frame(FIN | TEXT, b"b"), events=[], close_code=1002),
    dict(description="binary inside a fragmented text message, after a ping",
         data=frame(TEXT, b"a") + frame(FIN | PING) + frame(FIN | BINARY, b"b"),
         events=[(9, b"")], close_code=1002),
    dict(description="16-bit length of 125", data=frame(FIN | BINARY, length_bytes=b"\x7e\x00\x7d"),
         events=[], close_code=1002),
    dict(description="16-bit length of 0", data=frame(FIN | BINARY, length_bytes=b"\x7e\x00\x00"),
         events=[], close_code=1002),
    dict(description="64-bit length of 65535",
         data=frame(FIN | BINARY, length_bytes=b"\x7f" + (65535).to_bytes(8, "big")),
         events=[], close_code=1002),
    dict(description="64-bit length with the top bit set",
         data=frame(FIN | BINARY, length_bytes=b"\x7f" + (1 << 63 | 70000).to_bytes(8, "big")),
         events=[], close_code=1002),
    dict(description="ping with a 16-bit length", data=frame(FIN | PING, length_bytes=b"\x7e\x00\x7e"),
         events=[], close_code=1002),
    dict(description="close payload of 1 byte", data=frame(FIN | CLOSE, b"\x03"), events=[],
         close_code=1002),
    *[
        dict(description=f"close code {code} not allowed on the wire",
             data=frame(FIN | CLOSE, code.to_bytes(2, "big")), events=[], close_code=1002)
        for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535)
    ],
    dict(description="valid frames then a fault: events first, then the error",
         data=frame(FIN | TEXT, b"ok") + frame(FIN | PING, b"p") + frame(FIN | 0x40 | TEXT),
         events=[(1, b"ok"), (9, b"p")], close_code=1002),
    # ---- 1007: invalid UTF-8 ----
    dict(description="text with an invalid start byte 0xff", data=frame(FIN | TEXT, b"ab\xffcd"),
         events=[], close_code=1007),
    dict(description="overlong '/' (C0 AF)", data=frame(FIN | TEXT, b"\xc0\xaf"), events=[],
         close_code=1007),
    dict(description="UTF-16 surrogate U+D800 (ED A0 80)", data=frame(FIN | TEXT, b"\xed\xa0\x80"),
         events=[], close_code=1007),
    dict(description="above U+10FFFF (F4 90 80 80)", data=frame(FIN | TEXT, b"\xf4\x90\x80\x80"),
         events=[], close_code=1007),
    dict(description="text ends inside a code point", data=frame(FIN | TEXT, "é".encode()[:1]),
         events=[], close_code=1007),
    dict(description="fragmented text ends inside a code point",
         data=frame(TEXT, b"ok") + frame(FIN | CONT, "€".encode()[:2]), events=[], close_code=1007),
    dict(description="invalid UTF-8 in the first fragment, fails before the message ends",
         data=frame(TEXT, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"),
         events=[], close_code=1007),
    dict(description="binary is not checked for UTF-8", data=frame(FIN | BINARY, b"\xff\xfe"),
         events=[(2, b"\xff\xfe")], close_code=None),
    dict(description="close reason not valid UTF-8", data=frame(FIN | CLOSE, b"\x03\xe8\xff"),
         events=[], close_code=1007),
    # ---- 1009: too big, from the header ----
    dict(description="one frame over max_message_size", data=frame(FIN | BINARY, b"x" * 11),
         max_message_size=10, events=[], close_code=1009),
    dict(description="fragments summing over max_message_size",
         data=frame(BINARY, b"x" * 6) + frame(FIN | PING) + frame(FIN | CONT, b"y" * 5),
         max_message_size=10, events=[(9, b"")], close_code=1009),
    dict(description="header announcing 20 MiB, no payload sent",
         data=frame(FIN | BINARY, length_bytes=b"\x7f" + (20 << 20).to_bytes(8, "big")),
         events=[], close_code=1009),
]
