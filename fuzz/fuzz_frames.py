"""Differential fuzzing of FrameDecoder: the Cython twin against the pure twin.

Input layout (read with fuzz._common.Reader):

* byte 0, options: bit 0 ``client_side``; bits 1-3 index of ``MAX_MESSAGE_SIZES``; bit 4 deliver
  the chunks through ``get_buffer``/``buffer_updated`` instead of ``feed``; bit 5 feed a
  ``bytearray`` (bit 6: a ``memoryview``) instead of ``bytes``.
* byte 1: number of fuzzer-chosen chunks ``k`` (mod 8), then ``k`` bytes, each a chunk length
  (0 is a legal empty feed); whatever follows is the stream, and what the chunks do not cover is
  fed as one last chunk.

Both twins must produce the same events and the same error (type and close code), and the pure
twin fed the whole stream at once must agree with itself fed in chunks (the contract says every
fault is raised "as soon as its bytes are there", so chunking cannot change the outcome).  Events
are also checked against the contract: payloads are ``bytes``, text is valid UTF-8, a control
payload is at most 125 bytes, a data message at most ``max_message_size``, a close payload parses.
"""

from __future__ import annotations


from _common import TWINS, Finding, Reader, chunked_input, main, pure
from relay._errors import RemoteProtocolError

MAX_MESSAGE_SIZES = (16 * 1024 * 1024, 0, 1, 4, 10, 125, 126, 65536)
MAX_CHUNKS = 8
DEAD_DECODER_PROBES = 2  # later calls on a failed decoder must raise the same error again


def parse_input(data: bytes):
    reader = Reader(data)
    options = reader.byte()
    chunks = reader.chunks(MAX_CHUNKS)
    return dict(
        client_side=bool(options & 1),
        max_message_size=MAX_MESSAGE_SIZES[(options >> 1) & 7],
        use_buffer=bool(options & 0x10),
        wrap=bytearray if options & 0x20 else memoryview if options & 0x40 else bytes,
        chunks=chunks,
    )


def make_input(stream: bytes, *, client_side=False, max_message_size=None, chunk_lengths=()) -> bytes:
    """The fuzz input that replays ``stream`` (used to build the seed corpus)."""
    index = MAX_MESSAGE_SIZES.index(max_message_size if max_message_size is not None else MAX_MESSAGE_SIZES[0])
    options = (1 if client_side else 0) | index << 1
    return chunked_input(options, stream, chunk_lengths, MAX_CHUNKS)


def decode(module, chunks, *, client_side, max_message_size, use_buffer=False, wrap=bytes):
    """Run one decoder over ``chunks``: (events, error as (type, close_code) or None)."""
    decoder = module.FrameDecoder(max_message_size, client_side=client_side)
    events = []
    error = None
    try:
        for chunk in chunks:
            if use_buffer:
                view = decoder.get_buffer()
                if len(view) < len(chunk) or len(view) < 1:
                    raise Finding(f"{module.__name__}: get_buffer() gave {len(view)} bytes")
                view[: len(chunk)] = chunk
                del view
                decoder.buffer_updated(len(chunk))
            else:
                decoder.feed(wrap(chunk))
            while (event := decoder.next_event()) is not None:
                events.append(event)
    except RemoteProtocolError as exc:
        error = (type(exc), exc.close_code)
    except Finding:
        raise
    except Exception as exc:  # noqa: BLE001
        raise Finding(f"{module.__name__}: unexpected {type(exc).__name__}: {exc!r}") from exc
    if error is not None:
        for _ in range(DEAD_DECODER_PROBES):
            for probe in (lambda: decoder.feed(b"\x81"), decoder.next_event):
                try:
                    probe()
                except RemoteProtocolError as exc:
                    if (type(exc), exc.close_code) != error:
                        raise Finding(f"{module.__name__}: dead decoder raised {exc!r}, first {error}")
                else:
                    raise Finding(f"{module.__name__}: dead decoder did not raise again")
    return events, error


def check_events(events, max_message_size):
    for event in events:
        if type(event) is not tuple or len(event) != 2:
            raise Finding(f"event is not a 2-tuple: {event!r}")
        opcode, payload = event
        if type(payload) is not bytes:
            raise Finding(f"payload is a {type(payload).__name__}, not bytes")
        if opcode in (pure.OP_TEXT, pure.OP_BINARY):
            if len(payload) > max_message_size:
                raise Finding(f"message of {len(payload)} bytes over the limit {max_message_size}")
            if opcode == pure.OP_TEXT:
                payload.decode("utf-8")  # UnicodeDecodeError is a finding
        elif opcode in (pure.OP_PING, pure.OP_PONG, pure.OP_CLOSE):
            if len(payload) > pure.MAX_CONTROL_PAYLOAD:
                raise Finding(f"control payload of {len(payload)} bytes")
            if opcode == pure.OP_CLOSE:
                pure.parse_close_payload(payload)
        else:
            raise Finding(f"event with opcode {opcode}")


def test_one_input(data: bytes) -> None:
    case = parse_input(data)
    settings = dict(client_side=case["client_side"], max_message_size=case["max_message_size"])
    results = {
        name: decode(module, case["chunks"], use_buffer=case["use_buffer"], wrap=case["wrap"], **settings)
        for name, module in TWINS
    }
    if results["pure"] != results["fast"]:
        raise Finding(f"twins disagree on {case!r}: {results!r}")
    whole = decode(pure, [b"".join(case["chunks"])], **settings)
    if whole != results["pure"]:
        raise Finding(f"chunking changed the outcome: whole {whole!r}, chunked {results['pure']!r}")
    check_events(results["pure"][0], case["max_message_size"])


def seeds():
    """Seed inputs built from tests/corpus/frames.py: each stream whole, and cut in small chunks."""
    from tests.corpus.frames import CASES

    for case in CASES:
        settings = dict(client_side=case.get("client_side", False), max_message_size=case.get("max_message_size"))
        yield make_input(case["data"], **settings)
        yield make_input(case["data"], chunk_lengths=(1, 2, 3, 1, 5, 7, 0), **settings)


if __name__ == "__main__":
    main(test_one_input)
