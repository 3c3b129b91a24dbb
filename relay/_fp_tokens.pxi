# Apache Cassandra partitioner tokens (docs/fastpath.md, section 4); twin of relay/_purepath/tokens.py.
#
# Bit-exact with Cassandra's Murmur3Partitioner and RandomPartitioner so that a key lands on the
# same ring position as in a Cassandra cluster sharing the ring.

from libc.stdint cimport INT64_MAX, INT64_MIN, int64_t, uint64_t
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_Check

import hashlib as _tok_hashlib

cdef extern from "Python.h":
    const char* _tok_utf8 "PyUnicode_AsUTF8AndSize" (object text, Py_ssize_t* size) except NULL

cdef uint64_t _TOK_C1 = 0x87c37b91114253d5ULL
cdef uint64_t _TOK_C2 = 0x4cf5ad432745937fULL


cdef inline uint64_t _tok_rotl(uint64_t value, int bits) noexcept nogil:
    return (value << bits) | (value >> (64 - bits))


cdef inline uint64_t _tok_load_le64(const unsigned char* p) noexcept nogil:
    # Byte by byte so it is right on big-endian hosts too; compilers fuse it into one load.
    return (<uint64_t>p[0] | (<uint64_t>p[1] << 8) | (<uint64_t>p[2] << 16)
            | (<uint64_t>p[3] << 24) | (<uint64_t>p[4] << 32) | (<uint64_t>p[5] << 40)
            | (<uint64_t>p[6] << 48) | (<uint64_t>p[7] << 56))


cdef inline uint64_t _tok_tail_word(const unsigned char* p, Py_ssize_t count) noexcept nogil:
    # Cassandra XORs (long) key[i] << 8*i: Java bytes are signed, so a byte >= 0x80 sets every
    # bit above it too (the reference C code does not).
    cdef uint64_t word = 0
    cdef Py_ssize_t i
    for i in range(count):
        word ^= (<uint64_t><int64_t>(<signed char>p[i])) << (8 * i)
    return word


cdef inline uint64_t _tok_fmix(uint64_t k) noexcept nogil:
    k ^= k >> 33
    k *= 0xff51afd7ed558ccdULL
    k ^= k >> 33
    k *= 0xc4ceb9fe1a85ec53ULL
    k ^= k >> 33
    return k


cdef int64_t _tok_murmur3(const unsigned char* data, Py_ssize_t length) noexcept nogil:
    cdef uint64_t h1 = 0, h2 = 0, k1, k2
    cdef Py_ssize_t full = length & ~(<Py_ssize_t>15)
    cdef Py_ssize_t start, rest
    cdef int64_t token
    if length == 0:
        return INT64_MIN  # Cassandra's minimum token
    for start in range(0, full, 16):
        k1 = _tok_load_le64(data + start)
        k2 = _tok_load_le64(data + start + 8)
        h1 ^= _tok_rotl(k1 * _TOK_C1, 31) * _TOK_C2
        h1 = (_tok_rotl(h1, 27) + h2) * 5 + 0x52dce729
        h2 ^= _tok_rotl(k2 * _TOK_C2, 33) * _TOK_C1
        h2 = (_tok_rotl(h2, 31) + h1) * 5 + 0x38495ab5
    rest = length - full
    if rest > 8:
        k2 = _tok_tail_word(data + full + 8, rest - 8)
        h2 ^= _tok_rotl(k2 * _TOK_C2, 33) * _TOK_C1
    if rest > 0:
        k1 = _tok_tail_word(data + full, 8 if rest > 8 else rest)
        h1 ^= _tok_rotl(k1 * _TOK_C1, 31) * _TOK_C2
    h1 ^= <uint64_t>length
    h2 ^= <uint64_t>length
    h1 += h2
    h2 += h1
    h1 = _tok_fmix(h1)
    h2 = _tok_fmix(h2)
    h1 += h2
    token = <int64_t>h1
    # Long.MIN_VALUE is reserved as the minimum token, so Cassandra moves it to the top.
    return INT64_MAX if token == INT64_MIN else token


cdef bytes _tok_other_key(object key):
    try:
        return memoryview(key).tobytes()
    except TypeError:
        raise TypeError(f"key must be bytes-like or str, not {type(key).__name__}") from None


def murmur3_token(key):
    """Murmur3Partitioner's token: h1 of MurmurHash3_x64_128 (seed 0) as a signed 64-bit int.

    ``key`` is bytes-like, or ``str`` hashed as UTF-8; the empty key gives -2**63.
    """
    cdef Py_ssize_t length
    cdef const char* data
    if PyBytes_CheckExact(key):
        return _tok_murmur3(<const unsigned char*>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key))
    if PyUnicode_Check(key):
        data = _tok_utf8(key, &length)
        return _tok_murmur3(<const unsigned char*>data, length)
    cdef bytes copy = _tok_other_key(key)
    return _tok_murmur3(<const unsigned char*>PyBytes_AS_STRING(copy), PyBytes_GET_SIZE(copy))


def random_token(key):
    """RandomPartitioner's token: abs() of the MD5 digest read as a signed big-endian int.

    ``key`` is bytes-like, or ``str`` hashed as UTF-8; the empty key gives -1.
    """
    cdef bytes data
    if PyBytes_CheckExact(key):
        data = key
    elif PyUnicode_Check(key):
        data = (<str>key).encode("utf-8")
    else:
        data = _tok_other_key(key)
    if PyBytes_GET_SIZE(data) == 0:
        return -1  # Cassandra's minimum token
    return abs(int.from_bytes(_tok_hashlib.md5(data).digest(), "big", signed=True))
