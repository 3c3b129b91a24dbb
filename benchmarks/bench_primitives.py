"""Speed of the small primitives: cookie lookup, murmur3 tokens, envelope peek and build.

``run() -> list[dict]`` is the entry point for benchmarks/fastpath.py; each dict is a ``Row``
there: ``group``, ``case``, ``impl``, ``role`` ("relay" for a twin, "peer" for a reference),
``seconds`` (median time of one call), ``size`` (input bytes) and ``extra``.
``python -m benchmarks.bench_primitives [--quick]`` prints the rows.

Every candidate is checked once for the right answer before it is timed.  Timings are never
asserted anywhere: linear time and correctness are the tests' business (tests/unit/test_cookie.py,
tests/unit/test_tokens.py, tests/unit/test_envelope.py).
"""

from __future__ import annotations

import os
import statistics
import sys
import timeit
from http.cookies import SimpleCookie

import msgpack

from benchmarks._report import format_size

import relay._purepath as pure_twin

try:
    import relay._fastpath as fast_twin
except ImportError:  # not built: measure what exists
    fast_twin = None

KIB = 1024
MIB = 1024 * KIB
ENVELOPE_BODY_SIZES = (1 * KIB, 50 * KIB, 1 * MIB, 5 * MIB)
ADVERSARIAL_COOKIE_BYTES = 16 * KIB
COOKIE_NAME = "gcbSessionServer"
SEQ = 123456  # a uint32 seq: a 5-byte msgpack int, as in a long-lived session
MASTER_TAIL = pure_twin.sender_tail("master")  # the stamp the relay appends (SPEC 4)
# The labels benchmarks/fastpath.py uses for the twins and for the driver's C extension.
FAST_LABEL, PURE_LABEL = "relay Cython", "relay pure"
DRIVER_LABEL = "cassandra-driver"

FULL_SETTINGS = {"rounds": 7, "min_sample_seconds": 0.02}
QUICK_SETTINGS = {"rounds": 3, "min_sample_seconds": 0.005}
# SimpleCookie takes about half a second on the quoted 16 KiB header (CVE-2024-7592).
SLOW_PEER_ROUNDS = 3


def _twins() -> dict[str, object]:
    twins = {PURE_LABEL: pure_twin}
    if fast_twin is not None:
        twins = {FAST_LABEL: fast_twin, **twins}
    return twins


def _measure_interleaved(candidates, *, rounds, min_sample_seconds):
    """Median seconds per call of each candidate, sampled in turn so that drift hits all alike."""
    timers = {name: timeit.Timer(call) for name, call in candidates.items()}
    calls = {}
    for name, timer in timers.items():
        count = 1
        while timer.timeit(count) < min_sample_seconds:  # the first pass doubles as a warm-up
            count *= 2
        calls[name] = count
    samples = {name: [] for name in candidates}
    names = list(candidates)
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(timers[name].timeit(calls[name]) / calls[name])
    return {name: statistics.median(values) for name, values in samples.items()}


def _rows(group, case, size, candidates, settings, extra=None):
    """``candidates``: impl -> (role, call, check); check(result) must hold before timing."""
    for impl, (_, call, check) in candidates.items():
        if not check(call()):
            raise AssertionError(f"{group} / {case} / {impl}: wrong result, refusing to time it")
    medians = _measure_interleaved({impl: c[1] for impl, c in candidates.items()}, **settings)
    return [
        {"group": group, "case": case, "impl": impl, "role": role, "seconds": medians[impl],
         "size": size, "extra": dict(extra or {})}
        for impl, (role, _, _) in candidates.items()
    ]




# ---- cookies --------------------------------------------------------------------------------

def typical_cookie_header() -> str:
    """What a browser on a site with analytics sends: a dozen cookies, ours last."""
    cookies = [f"_ga=GA1.2.{1234567890 + i}.1700000000" for i in range(4)]
    cookies += ["theme=dark", "lang=fr-FR", "consent=%7B%22ads%22%3Afalse%7D",
                "csrftoken=Zx8q3Lm0Vb9Wc2Ty7Ua6Rs5Pd4Ne1Kf0", "sessionid=3f9a7c2e1b5d4f6a8c0e2b4d",
                "_fbp=fb.1.1700000000000.1234567890", f"{COOKIE_NAME}=CB_Server_3"]
    return "; ".join(cookies)


def adversarial_cookie_headers(size: int = ADVERSARIAL_COOKIE_BYTES) -> dict[str, str]:
    """Headers of ``size`` bytes built to make a cookie parser backtrack or go quadratic."""
    tail = f"; {COOKIE_NAME}=CB_Server_1"
    body = size - len(tail)
    return {
        # CVE-2024-7592: http.cookies is quadratic on quoted values full of backslashes.
        "quoted backslashes": ('a="' + "\\" * (body - 4) + '"')[:body] + tail,
        "backslashes and quotes": ('a=' + '\\"' * body)[:body] + tail,
        # Names one byte short of ours: every cookie starts a comparison that fails late.
        "near-miss names": (f"{COOKIE_NAME[:-1]}=x; " * body)[:body] + tail,
        # Our name again and again with no "=": every match fails on the byte after the name.
        "name without =": (COOKIE_NAME * body)[:body] + tail,
        "separators": (";, " * body)[:body] + tail,
    }


def _simple_cookie_lookup(header: str, name: str):
    morsel = SimpleCookie(header).get(name)
    return None if morsel is None else morsel.value


def bench_cookies(settings) -> list[dict]:
    rows = []
    typical = typical_cookie_header()
    candidates = {
        label: ("relay", lambda twin=twin: twin.parse_cookie(typical, COOKIE_NAME),
                lambda value: value == "CB_Server_3")
        for label, twin in _twins().items()
    }
    candidates["SimpleCookie"] = ("peer", lambda: _simple_cookie_lookup(typical, COOKIE_NAME),
                                  lambda value: value == "CB_Server_3")
    rows += _rows("cookie lookup", f"typical ({len(typical)} B)", len(typical), candidates,
                  settings)

    slow_settings = dict(settings, rounds=min(settings["rounds"], SLOW_PEER_ROUNDS))
    for case, header in adversarial_cookie_headers().items():
        candidates = {
            label: ("relay", lambda twin=twin, h=header: twin.parse_cookie(h, COOKIE_NAME),
                    lambda value: value is not None)
            for label, twin in _twins().items()
        }
        # SimpleCookie gives up on some of these (None) or finds another value: timed anyway.
        candidates["SimpleCookie"] = (
            "peer", lambda h=header: _simple_cookie_lookup(h, COOKIE_NAME), lambda value: True)
        rows += _rows(f"adversarial cookie header ({format_size(ADVERSARIAL_COOKIE_BYTES)})",
                      case, len(header), candidates, slow_settings)
    return rows


# ---- tokens ---------------------------------------------------------------------------------

def bench_tokens(settings) -> list[dict]:
    from cassandra.metadata import Murmur3Token

    try:
        from cassandra.cmurmur3 import murmur3 as driver_c_murmur3
    except ImportError:  # the driver was installed without its C extensions
        driver_c_murmur3 = None
    rows = []
    for case, key in (("16 B key", os.urandom(16)),
                      ("36 B session id", b"7f3c2a9e-1b4d-4e6f-8a0c-2b4d6e8f0a1c"),
                      ("1 KiB key", os.urandom(KIB))):
        expected = Murmur3Token.from_key(key).value
        candidates = {
            label: ("relay", lambda twin=twin, k=key: twin.murmur3_token(k),
                    lambda token, e=expected: token == e)
            for label, twin in _twins().items()
        }
        if driver_c_murmur3 is not None:
            candidates[DRIVER_LABEL] = ("peer", lambda k=key: driver_c_murmur3(k),
                                        lambda token, e=expected: token == e)
        candidates["Murmur3Token.from_key"] = (
            "peer", lambda k=key: Murmur3Token.from_key(k).value,
            lambda token, e=expected: token == e)
        rows += _rows("murmur3 token", case, len(key), candidates, settings)
    return rows


# ---- envelopes ------------------------------------------------------------------------------

def structured_body(size: int):
    """A DOM-patch-like body of about ``size`` packed bytes: many small maps, arrays, strings."""
    nodes = []
    packed_size = 0
    index = 0
    while packed_size < size:
        node = {"id": index, "tag": "div", "attrs": {"class": "row item", "data-n": str(index)},
                "children": [index + 1, index + 2], "text": None, "visible": True}
        nodes.append(node)
        packed_size += len(msgpack.packb(node))
        index += 1
    return {"op": "patch", "nodes": nodes}


def bench_envelopes(settings) -> list[dict]:
    rows = []
    for size in ENVELOPE_BODY_SIZES:
        for shape, body in (("structured", structured_body(size)), ("bin", b"\x00" * size)):
            packed = msgpack.packb(body)
            envelope = pure_twin.build_envelope("patch", SEQ, packed)
            offset = len(envelope) - len(packed)
            case = f"{format_size(size)} {shape}"
            candidates = {
                label: ("relay", lambda twin=twin, e=envelope: twin.peek_envelope(e),
                        lambda result, o=offset, n=len(envelope): result == ("patch", SEQ, o, n))
                for label, twin in _twins().items()
            }
            candidates["msgpack.unpackb"] = (
                "peer", lambda e=envelope: msgpack.unpackb(e), lambda result: result[1] == SEQ)
            rows += _rows("envelope peek", case, len(envelope), candidates, settings)

            candidates = {
                label: ("relay", lambda twin=twin, p=packed: twin.build_envelope("patch", SEQ, p),
                        lambda result, e=envelope: result == e)
                for label, twin in _twins().items()
            }
            if fast_twin is not None:
                # What the relay really does: a fresh header in front of the same body bytes.
                candidates[f"{FAST_LABEL} frame header only"] = (
                    "relay",
                    lambda p=packed: fast_twin.envelope_frame_header("patch", SEQ, len(p), MASTER_TAIL),
                    lambda header, e=envelope, o=offset: header.endswith(b"\x94" + e[1:o]))
            candidates["msgpack.packb"] = (
                "peer", lambda b=body: msgpack.packb(["patch", SEQ, b]),
                lambda result, e=envelope: result == e)
            rows += _rows("envelope build", case, len(packed), candidates, settings)
    return rows


STAMP_BODY_SIZES = (200, 2 * KIB, 50 * KIB)  # SPEC 4's mutations: 200 B to 50 KB


def bench_stamping(settings) -> list[dict]:
    """What the sender stamp costs on the wire path: one ``sendmsg`` of head + body + tail (relay,
    stamped) against head + body (the same frame without its fourth element), to a socketpair
    that is drained in the same call.  The stamp's header bytes are built with the rest of the
    header (one call either way), so the send is the only place it could cost."""
    import socket

    twin = fast_twin or pure_twin
    rows = []
    sender, receiver = socket.socketpair()
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * MIB)
    drain = bytearray(1 * MIB)
    try:
        for size in STAMP_BODY_SIZES:
            body = memoryview(msgpack.packb(b"m" * (size - 5)))
            stamped = [twin.envelope_frame_header("mutation", SEQ, len(body), MASTER_TAIL), body, MASTER_TAIL]
            envelope_head = twin.envelope_header("mutation", SEQ)
            unstamped = [twin.frame_header(twin.OP_BINARY, len(envelope_head) + len(body)) + envelope_head, body]

            def send(buffers):
                sent = sender.sendmsg(buffers)
                got = 0
                while got < sent:
                    got += receiver.recv_into(drain)
                return sent

            candidates = {
                "relay sendmsg head+body+stamp": ("relay", lambda b=stamped: send(b),
                                                  lambda sent, n=sum(len(x) for x in stamped): sent == n),
                "sendmsg head+body (no stamp)": ("peer", lambda b=unstamped: send(b),
                                                 lambda sent, n=sum(len(x) for x in unstamped): sent == n),
            }
            rows += _rows("stamp: send", format_size(size), size, candidates, settings)
    finally:
        sender.close()
        receiver.close()
    return rows


def run(quick: bool = False) -> list[dict]:
    """All rows: cookies, tokens, envelopes, stamping (each candidate checked before it is timed)."""
    settings = QUICK_SETTINGS if quick else FULL_SETTINGS
    return bench_cookies(settings) + bench_tokens(settings) + bench_envelopes(settings) + bench_stamping(settings)


def _print(rows: list[dict]) -> None:
    for row in rows:
        seconds = row["seconds"]
        shown = f"{seconds * 1e6:12.2f} us" if seconds < 1e-1 else f"{seconds:12.3f} s "
        print(f"{row['group']:<40} {row['case']:<28} {row['impl']:<34} {shown}")


if __name__ == "__main__":
    _print(run(quick="--quick" in sys.argv[1:]))
