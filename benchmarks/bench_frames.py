"""Frame codec speed: relay's two twins against wsproto and websockets.

``run(sizes) -> list[dict]`` is the entry point for the overall benchmark harness; each dict has
``name``, ``impl``, ``size`` (payload bytes), ``seconds`` (best time of one operation) and
``gbps`` (payload gigabytes per second; ``None`` where it means nothing).
``python benchmarks/bench_frames.py [SIZE ...]`` prints a table.
"""

from __future__ import annotations

import os
import sys
import timeit

import relay._purepath.frames as pure_twin

try:
    import relay._fastpath as fast_twin
except ImportError:  # not built: measure what exists
    fast_twin = None

MASK_KEY = b"\x37\xfa\x21\x3d"
DEFAULT_SIZES = (1024, 64 * 1024, 1024 * 1024)
#: Small frames are decoded in batches of this many per feed, as they arrive from one recv.
SMALL_FRAMES_PER_FEED = 64
#: Target wall time of one measurement, in seconds.
MEASURE_SECONDS = 0.2


def _best_time(function) -> float:
    """Best time of one call, over a few repeats of a loop sized to about MEASURE_SECONDS."""
    timer = timeit.Timer(function)
    loops, elapsed = timer.autorange()
    loops = max(1, int(loops * MEASURE_SECONDS / max(elapsed, 1e-9)))
    return min(timer.repeat(repeat=5, number=loops)) / loops


def _row(name, impl, size, seconds, count=1):
    return {
        "name": name,
        "impl": impl,
        "size": size,
        "seconds": seconds,
        "gbps": size * count / seconds / 1e9 if size else None,
    }


def _relay_decode(twin, data):
    def decode():
        decoder = twin.FrameDecoder()
        decoder.feed(data)
        while decoder.next_event() is not None:
            pass

    return decode


def _relay_decode_recv_into(twin, data):
    def decode():
        decoder = twin.FrameDecoder()
        position = 0
        while position < len(data):
            view = decoder.get_buffer()
            n = min(len(view), len(data) - position)
            view[:n] = data[position : position + n]  # stands for sock.recv_into(view)
            position += n
            decoder.buffer_updated(n)
            while decoder.next_event() is not None:
                pass

    return decode


def _wsproto_decode(data):
    from wsproto.frame_protocol import FrameProtocol

    def decode():
        protocol = FrameProtocol(client=False, extensions=[])
        protocol.receive_bytes(data)
        for _ in protocol.received_frames():
            pass

    return decode


def _websockets_decode(data, frames):
    from websockets.frames import Frame
    from websockets.streams import StreamReader

    def decode():
        reader = StreamReader()
        reader.feed_data(data)
        for _ in range(frames):
            parser = Frame.parse(reader.read_exact, mask=True, max_size=None, extensions=None)
            try:
                next(parser)
            except StopIteration:
                pass

    return decode


def _implementations():
    twins = [("relay-pure", pure_twin)]
    if fast_twin is not None:
        twins.insert(0, ("relay-cython", fast_twin))
    return twins


def run(sizes=DEFAULT_SIZES) -> list[dict]:
    rows = []
    for size in sizes:
        payload = os.urandom(size)
        frames = SMALL_FRAMES_PER_FEED if size <= 4096 else 1
        one = pure_twin.encode_client_frame(pure_twin.OP_BINARY, payload, mask_key=MASK_KEY)
        stream = one * frames
        label = f"decode masked ({frames} frame{'s' if frames > 1 else ''} per feed)"
        for impl, twin in _implementations():
            rows.append(_row(label, impl, size, _best_time(_relay_decode(twin, stream)) / frames))
            if size > 4096:
                rows.append(_row("decode masked via get_buffer/buffer_updated", impl, size,
                                 _best_time(_relay_decode_recv_into(twin, stream))))
        rows.append(_row(label, "wsproto", size, _best_time(_wsproto_decode(stream)) / frames))
        rows.append(_row(label, "websockets", size,
                         _best_time(_websockets_decode(stream, frames)) / frames))
        for impl, twin in _implementations():
            rows.append(_row("unmask", impl, size,
                             _best_time(lambda t=twin: t.unmask(payload, MASK_KEY))))
            rows.append(_row("encode_frame", impl, size,
                             _best_time(lambda t=twin: t.encode_frame(2, payload))))
        buffer = bytearray(payload)
        rows.append(_row("memcpy (bytes(bytearray))", "python", size,
                         _best_time(lambda: bytes(buffer))))
    return rows


def main(argv) -> None:
    sizes = [int(a) for a in argv] or list(DEFAULT_SIZES)
    print(f"{'operation':50} {'impl':14} {'size':>9} {'time':>11} {'GB/s':>7}")
    for row in run(sizes):
        gbps = f"{row['gbps']:7.2f}" if row["gbps"] is not None else "      -"
        print(f"{row['name']:50} {row['impl']:14} {row['size']:9d} "
              f"{row['seconds'] * 1e6:9.2f}us {gbps}")


if __name__ == "__main__":
    main(sys.argv[1:])
