"""Differential fuzzing of parse_cookie: Cython twin, pure twin and a transcription of nginx's C.

Input layout: byte 0, options: bit 0 name as ``bytes`` (else ``str``); bits 1-2 how headers are
given (0: one ``str``, 1: one ``bytes``, 2: a ``list``, 3: a ``tuple``); bit 3 mix ``str`` and
``bytes`` lines in a list/tuple; bit 4 decode name and headers as UTF-8 (``surrogateescape``) rather
than latin-1, so characters above U+00FF (a ``UnicodeEncodeError`` in both twins) happen.  Then the
name (a length byte and its bytes); then the header lines, separated by ``\\n`` (a ``str``/``bytes``
header is the first line only).

Both twins must agree (value, or exception type).  Where the input is a legal latin-1 one, the
value must also be that of :func:`nginx_cookie`, a line-by-line transcription of
``ngx_http_parse_multi_header_lines`` (src/http/ngx_http_parse.c) and ``ngx_strncasecmp``.
"""

from __future__ import annotations

from _common import TWINS, Finding, Reader, main, outcome, same

MAX_NAME_BYTES = 64


def _fold(byte: int) -> int:
    return byte | 0x20 if 0x41 <= byte <= 0x5A else byte  # ngx_strncasecmp: ASCII letters only


def nginx_cookie(lines: list, name: bytes):
    """``$cookie_<name>`` as nginx computes it (``lines``: the Cookie header values, as bytes)."""
    folded_name = bytes(_fold(b) for b in name)
    for line in lines:
        start, end = 0, len(line)
        while start < end:
            candidate = line[start : start + len(name)]
            if len(candidate) == len(name) and bytes(_fold(b) for b in candidate) == folded_name:
                start += len(name)
                while start < end and line[start] == 0x20:
                    start += 1
                if start < end:
                    byte = line[start]
                    start += 1  # *start++ != '=': the byte is consumed even when it is not '='
                    if byte == 0x3D:
                        while start < end and line[start] == 0x20:
                            start += 1
                        last = start
                        while last < end and line[last] != 0x3B:
                            last += 1
                        return line[start:last].decode("latin-1")
            while start < end:  # skip:
                byte = line[start]
                start += 1
                if byte in (0x3B, 0x2C):
                    break
            while start < end and line[start] == 0x20:
                start += 1
    return None


def parse_input(data: bytes):
    reader = Reader(data)
    options = reader.byte()
    codec = ("utf-8", "surrogateescape") if options & 0x10 else ("latin-1",)
    raw_name = reader.sized(MAX_NAME_BYTES)
    raw_lines = reader.rest().split(b"\n")
    name = raw_name if options & 1 else raw_name.decode(*codec)
    shape = (options >> 1) & 3
    if shape == 0:
        header = raw_lines[0].decode(*codec)
        raw_lines = raw_lines[:1]
    elif shape == 1:
        header = raw_lines[0]
        raw_lines = raw_lines[:1]
    else:
        mixed = options & 0x08
        lines = [line if mixed and i % 2 else line.decode(*codec) for i, line in enumerate(raw_lines)]
        header = lines if shape == 2 else tuple(lines)
    return name, header, raw_name, raw_lines, options


def test_one_input(data: bytes) -> None:
    name, header, raw_name, raw_lines, options = parse_input(data)
    results = {label: outcome(module.parse_cookie, header, name) for label, module in TWINS}
    same(f"parse_cookie({header!r}, {name!r})", results)
    result = results["pure"]
    if result[0] == "error":
        if result[1] is not UnicodeEncodeError:
            raise Finding(f"parse_cookie({header!r}, {name!r}) raised {result[1].__name__}")
        return
    if result[1] is not None and type(result[1]) is not str:
        raise Finding(f"parse_cookie returned a {type(result[1]).__name__}")
    if options & 0x10:
        return  # UTF-8 decoded input below U+0100 is still comparable, but the bytes differ: skip
    expected = nginx_cookie(raw_lines, raw_name)
    if result[1] != expected:
        raise Finding(f"parse_cookie({header!r}, {name!r}) = {result[1]!r}, nginx gives {expected!r}")


def make_input(header, name) -> bytes:
    """The fuzz input for a corpus case (latin-1 text; lists become newline-separated lines)."""
    name_bytes = name if isinstance(name, bytes) else name.encode("latin-1")
    options = 1 if isinstance(name, bytes) else 0
    if isinstance(header, (list, tuple)):
        lines = [line if isinstance(line, bytes) else line.encode("latin-1") for line in header]
        options |= (2 if isinstance(header, list) else 3) << 1
        if any(isinstance(line, bytes) for line in header):
            options |= 0x08
        if not lines or any(b"\n" in line for line in lines):
            return None  # an empty list has no input form; lines with \n cannot be split back
        body = b"\n".join(lines)
    else:
        body = header if isinstance(header, bytes) else header.encode("latin-1")
        options |= (1 if isinstance(header, bytes) else 0) << 1
        if b"\n" in body:
            return None
    if len(name_bytes) > MAX_NAME_BYTES:
        return None
    return bytes((options, len(name_bytes))) + name_bytes + body


def seeds():
    from tests.corpus.cookies import COOKIE_CASES

    for case in COOKIE_CASES:
        seed = make_input(case["header"], case["name"])
        if seed is not None:
            yield seed


if __name__ == "__main__":
    main(test_one_input)
