"""Apache Cassandra partitioner tokens, pure-Python twin of relay/_fp_tokens.pxi.

Bit-exact with Cassandra's Murmur3Partitioner and RandomPartitioner, so that a key lands on the
same ring position as in a Cassandra cluster that shares the ring (docs/fastpath.md, section 4).
"""

from __future__ import annotations

import hashlib

__all__ = ["murmur3_token", "random_token"]

_MASK_64 = 0xFFFFFFFFFFFFFFFF
_C1 = 0x87C37B91114253D5
_C2 = 0x4CF5AD432745937F
_BLOCK_BYTES = 16
_MIN_LONG = -(2**63)
_MAX_LONG = 2**63 - 1
# Cassandra's minimum tokens, given to the empty key.
MURMUR3_MIN_TOKEN = _MIN_LONG
RANDOM_MIN_TOKEN = -1


def _key_bytes(key):
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, bytes):
        return key
    try:
        view = memoryview(key)
    except TypeError:
        raise TypeError(f"key must be bytes-like or str, not {type(key).__name__}") from None
    return view.tobytes()


def _rotl(value: int, bits: int) -> int:
    return ((value << bits) | (value >> (64 - bits))) & _MASK_64


def _fmix(k: int) -> int:
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & _MASK_64
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & _MASK_64
    k ^= k >> 33
    return k


def _tail_word(tail: bytes) -> int:
    """Cassandra XORs ``(long) key[i] << 8*i``: Java bytes are signed, so a byte >= 0x80 sets
    every bit above it too (the reference C code does not)."""
    word = 0
    for shift, byte in enumerate(tail):
        word ^= ((byte - 0x100 if byte >= 0x80 else byte) << (8 * shift)) & _MASK_64
    return word


def murmur3_token(key: str | bytes | bytearray | memoryview) -> int:
    """Murmur3Partitioner's token: h1 of MurmurHash3_x64_128 (seed 0) as a signed 64-bit int."""
    data = _key_bytes(key)
    length = len(data)
    if length == 0:
        return MURMUR3_MIN_TOKEN
    h1 = h2 = 0
    full = length - length % _BLOCK_BYTES
    for start in range(0, full, _BLOCK_BYTES):
        k1 = int.from_bytes(data[start : start + 8], "little")
        k2 = int.from_bytes(data[start + 8 : start + 16], "little")
        h1 ^= (_rotl((k1 * _C1) & _MASK_64, 31) * _C2) & _MASK_64
        h1 = (_rotl(h1, 27) + h2) & _MASK_64
        h1 = (h1 * 5 + 0x52DCE729) & _MASK_64
        h2 ^= (_rotl((k2 * _C2) & _MASK_64, 33) * _C1) & _MASK_64
        h2 = (_rotl(h2, 31) + h1) & _MASK_64
        h2 = (h2 * 5 + 0x38495AB5) & _MASK_64
    tail = data[full:]
    if len(tail) > 8:
        k2 = _tail_word(tail[8:])
        h2 ^= (_rotl((k2 * _C2) & _MASK_64, 33) * _C1) & _MASK_64
    if tail:
        k1 = _tail_word(tail[:8])
        h1 ^= (_rotl((k1 * _C1) & _MASK_64, 31) * _C2) & _MASK_64
    h1 ^= length
    h2 ^= length
    h1 = (h1 + h2) & _MASK_64
    h2 = (h2 + h1) & _MASK_64
    h1 = _fmix(h1)
    h2 = _fmix(h2)
    h1 = (h1 + h2) & _MASK_64
    token = h1 - 2**64 if h1 >= 2**63 else h1
    # Long.MIN_VALUE is reserved as the minimum token, so Cassandra moves it to the top.
    return _MAX_LONG if token == _MIN_LONG else token


def random_token(key: str | bytes | bytearray | memoryview) -> int:
    """RandomPartitioner's token: abs() of the MD5 digest read as a signed big-endian int."""
    data = _key_bytes(key)
    if not data:
        return RANDOM_MIN_TOKEN
    return abs(int.from_bytes(hashlib.md5(data).digest(), "big", signed=True))
