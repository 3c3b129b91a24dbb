"""Cookie lookup and Set-Cookie building, pure-Python twin of relay/_fp_cookie.pxi.

``parse_cookie`` must pick the same value as nginx's ``$cookie_NAME`` (the load balancer routes
on it, and the relay must agree with it about which server owns a session), so it is a
transcription of ngx_http_parse_multi_header_lines, not an RFC 6265 parser.  Unlike
``http.cookies.SimpleCookie`` it never unquotes, keeps the first duplicate, and runs in linear
time (CVE-2024-7592 made SimpleCookie quadratic on backslashes).
"""

from __future__ import annotations

import re

from relay._errors import CookieError

__all__ = ["build_set_cookie", "parse_cookie"]

# nginx skips only spaces (not tabs) around the name and the "=".
_SPACES = re.compile(rb" *")
# Where the name does not match, nginx skips past the next ";" or "," and the spaces after it.
_NEXT_COOKIE = re.compile(rb"[;,] *")


def _as_latin1_bytes(text, what: str) -> bytes:
    if isinstance(text, str):
        return text.encode("latin-1")  # UnicodeEncodeError (a ValueError) past U+00FF
    if isinstance(text, (bytes, bytearray, memoryview)):
        return bytes(text)
    raise TypeError(f"{what} must be str or bytes, not {type(text).__name__}")


def _find_in_line(line: bytes, folded_name: bytes):
    """nginx's scan of one header line; ``folded_name`` is already ASCII-lowercased."""
    end = len(line)
    name_length = len(folded_name)
    if name_length > end:
        return None
    # bytes.lower() folds ASCII only, like ngx_strncasecmp: "\xc0" never matches "\xe0".
    folded_line = line.lower()
    pos = 0
    while pos < end:
        if folded_line.startswith(folded_name, pos):
            pos = _SPACES.match(line, pos + name_length).end()
            if pos < end:
                if line[pos] == 0x3D:  # "="
                    start = _SPACES.match(line, pos + 1).end()
                    stop = line.find(b";", start)
                    return line[start : stop if stop >= 0 else end]
                pos += 1  # nginx consumes the byte after the name even when it is not "="
        separator = _NEXT_COOKIE.search(line, pos)
        if separator is None:
            return None
        pos = separator.end()
    return None


def parse_cookie(header: str | bytes | list[str | bytes] | tuple[str | bytes, ...], name: str) -> str | None:
    """The value nginx gives for ``$cookie_<name>``, or ``None``.

    ``header`` is one Cookie header value (``str``, or ``bytes`` read as latin-1) or a list/tuple
    of them in the order they arrived.  The value is returned verbatim: quotes, commas and
    trailing spaces kept, nothing unescaped.  The first matching cookie wins.
    """
    folded_name = _as_latin1_bytes(name, "name").lower()
    lines = header if isinstance(header, (list, tuple)) else (header,)
    for line in lines:
        value = _find_in_line(_as_latin1_bytes(line, "header"), folded_name)
        if value is not None:
            return value.decode("latin-1")
    return None


# RFC 6265 section 4.1.1: cookie-name is an RFC 2616 token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# cookie-octet: %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E (no CTL, space, DQUOTE, comma,
# semicolon or backslash).
_COOKIE_VALUE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*")
# Anything that could end the attribute or the header line early.
_UNSAFE_IN_ATTRIBUTE = re.compile(r"[\x00-\x1f\x7f;]")
_SAME_SITE = {"strict": "Strict", "lax": "Lax", "none": "None"}


def build_set_cookie(
    name: str,
    value: str,
    *,
    path: str | None = "/",
    domain: str | None = None,
    max_age: int | None = None,
    secure: bool = False,
    http_only: bool = True,
    same_site: str | None = None,
    partitioned: bool = False,
) -> str:
    """The value of a ``Set-Cookie`` header; ``CookieError`` for anything that could inject."""
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise CookieError(f"cookie name {name!r} is not an RFC 6265 token")
    if not isinstance(value, str) or not _COOKIE_VALUE.fullmatch(value):
        raise CookieError(f"cookie value {value!r} has a byte that RFC 6265 forbids")
    parts = [f"{name}={value}"]
    if path is not None:
        parts.append(f"Path={_checked_attribute('path', path)}")
    if domain is not None:
        parts.append(f"Domain={_checked_attribute('domain', domain)}")
    if max_age is not None:
        if not isinstance(max_age, int) or isinstance(max_age, bool) or max_age < 0:
            raise CookieError(f"max_age must be a non-negative int, not {max_age!r}")
        parts.append(f"Max-Age={max_age}")
    canonical_same_site = None
    if same_site is not None:
        if not isinstance(same_site, str) or same_site.lower() not in _SAME_SITE:
            raise CookieError(f"same_site must be Strict, Lax or None, not {same_site!r}")
        canonical_same_site = _SAME_SITE[same_site.lower()]
    # Browsers drop SameSite=None and Partitioned cookies that are not Secure.
    if secure or partitioned or canonical_same_site == "None":
        parts.append("Secure")
    if http_only:
        parts.append("HttpOnly")
    if canonical_same_site is not None:
        parts.append(f"SameSite={canonical_same_site}")
    if partitioned:
        parts.append("Partitioned")
    return "; ".join(parts)


def _checked_attribute(what: str, text) -> str:
    if not isinstance(text, str) or _UNSAFE_IN_ATTRIBUTE.search(text) or not text.isascii():
        raise CookieError(f"cookie {what} {text!r} has a control byte, ';' or non-ASCII")
    return text
