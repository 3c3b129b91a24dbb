"""What every harness shares: the two twins, a byte reader, the finding exception and the atheris main.

The harnesses' one-input functions (``test_one_input(data: bytes)``) need neither atheris nor a
fuzzer: they read their input with :class:`Reader`, a small deterministic stand-in for
``atheris.FuzzedDataProvider``, so tests/tooling/test_fuzz_harnesses.py can replay seeds and crafted inputs
under plain pytest, and a crash file found by atheris replays the same way.
"""

from __future__ import annotations

import os
import sys

# The harnesses run from a checkout (python fuzz/fuzz_x.py): the checkout supplies ``tests`` (the seed
# corpora), appended so that ``relay`` is the package as installed in this interpreter (in .venv, the
# checkout compiled in place), not an uncompiled checkout shadowing it.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.append(REPO)

import relay._purepath as pure  # noqa: E402
from relay._errors import ProtocolError  # noqa: E402

try:
    import relay._fastpath as fast
except ImportError as exc:  # the differential harnesses mean nothing without both twins
    raise SystemExit(f"relay._fastpath is not built ({exc}): run `python setup.py build_ext --inplace`")

TWINS = (("pure", pure), ("fast", fast))


class Finding(AssertionError):
    """A disagreement between the twins, or an outcome the contract forbids."""


class Reader:
    """Consume a fuzz input front to back; past the end every read returns zeros / empty."""

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.pos = 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        value = self.data[self.pos]
        self.pos += 1
        return value

    def uint(self, nbytes: int) -> int:
        return int.from_bytes(self.take(nbytes).ljust(nbytes, b"\0"), "big")

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + max(n, 0)]
        self.pos += len(chunk)
        return chunk

    def sized(self, max_bytes: int = 255) -> bytes:
        """A length byte (capped at ``max_bytes``) and that many bytes."""
        return self.take(min(self.byte(), max_bytes))

    def rest(self) -> bytes:
        chunk = self.data[self.pos :]
        self.pos = len(self.data)
        return chunk

    def chunks(self, max_chunks: int) -> list:
        """A count byte, that many length bytes, then the rest of the input cut at those lengths:
        how a harness feeds one stream in fuzzer-chosen pieces (see ``chunked_input``)."""
        count = self.byte() % max_chunks
        lengths = [self.byte() for _ in range(count)]
        stream = self.rest()
        chunks, pos = [], 0
        for length in lengths:
            chunks.append(stream[pos : pos + length])
            pos += len(chunks[-1])
        if pos < len(stream) or not chunks:
            chunks.append(stream[pos:])
        return chunks


def chunked_input(options: int, stream: bytes, chunk_lengths, max_chunks: int) -> bytes:
    """The input that ``Reader.byte()`` then ``Reader.chunks()`` read back as ``options``, ``stream``."""
    lengths = bytes(chunk_lengths[: max_chunks - 1])
    return bytes((options, len(lengths))) + lengths + stream


def outcome(call, *args, **kwargs):
    """``("ok", result)`` or ``("error", type, close_code)``: what the contract says must agree."""
    try:
        return ("ok", call(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001 - every exception is compared, none is hidden
        return ("error", type(exc), getattr(exc, "close_code", None))


def same(label: str, results: dict) -> None:
    """Raise a Finding unless every twin's outcome is equal (results: twin name -> outcome)."""
    values = list(results.values())
    if any(value != values[0] for value in values[1:]):
        raise Finding(f"{label}: twins disagree: {results!r}")


def expect_only(exc: BaseException, allowed: tuple, label: str) -> None:
    if not isinstance(exc, allowed):
        raise Finding(f"{label}: unexpected {type(exc).__name__}: {exc!r}") from exc


def _instrument_loaded(prefixes) -> int:
    """Add coverage to every Python function already imported from modules named by ``prefixes``.

    The twins are imported before atheris starts, so import hooks cannot see them; atheris patches
    a function's code object in place, which reaches every reference to it.
    """
    import atheris
    import types

    seen = set()
    count = 0

    def visit(obj):
        nonlocal count
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, types.FunctionType) and obj.__module__ and obj.__module__.startswith(prefixes):
            atheris.instrument_func(obj)
            count += 1
        elif isinstance(obj, (staticmethod, classmethod)):
            visit(obj.__func__)
        elif isinstance(obj, property):
            for accessor in (obj.fget, obj.fset, obj.fdel):
                if accessor is not None:
                    visit(accessor)
        elif isinstance(obj, type) and obj.__module__.startswith(prefixes):
            for member in vars(obj).values():
                visit(member)

    for name, module in list(sys.modules.items()):
        if module is not None and name.startswith(prefixes):
            for member in list(vars(module).values()):
                visit(member)
    return count


def main(test_one_input, *, instrument=("relay._purepath",)) -> None:
    """Run ``test_one_input`` under atheris with libFuzzer's command line (sys.argv).

    Coverage comes from the pure twin (and whatever else ``instrument`` names); the Cython twin is
    not instrumented: the comparison with the pure one is what finds its bugs.
    """
    import atheris

    _instrument_loaded(tuple(instrument) + ("__main__", "fuzz_", "_common"))
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
