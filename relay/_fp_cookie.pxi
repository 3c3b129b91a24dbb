# Cookie lookup and Set-Cookie building (docs/fastpath.md, section 3); twin of
# relay/_purepath/cookie.py.
#
# parse_cookie must pick the same value as nginx's $cookie_NAME (the load balancer routes on it),
# so it is a transcription of ngx_http_parse_multi_header_lines, not an RFC 6265 parser.  One
# pass over the header: the only re-reading is the name comparison at the start of each cookie.

from libc.string cimport memchr
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_Check, PyUnicode_DecodeLatin1

cdef extern from "Python.h":
    int _ck_unicode_kind "PyUnicode_KIND" (object text)
    void* _ck_unicode_data "PyUnicode_DATA" (object text)
    Py_ssize_t _ck_unicode_length "PyUnicode_GET_LENGTH" (object text)
    int _CK_1BYTE_KIND "PyUnicode_1BYTE_KIND"


cdef bytes _ck_latin1_bytes(object text, str what):
    if PyBytes_CheckExact(text):
        return <bytes>text
    if PyUnicode_Check(text):
        return (<str>text).encode("latin-1")  # UnicodeEncodeError (a ValueError) past U+00FF
    if isinstance(text, (bytes, bytearray, memoryview)):
        return bytes(text)
    raise TypeError(f"{what} must be str or bytes, not {type(text).__name__}")


cdef inline bint _ck_name_at(const unsigned char* s, const unsigned char* folded_name,
                             Py_ssize_t name_length) noexcept nogil:
    # ASCII-only case folding, like ngx_strncasecmp: "\xc0" never matches "\xe0".
    cdef Py_ssize_t i
    cdef unsigned char c
    for i in range(name_length):
        c = s[i]
        if 0x41 <= c <= 0x5a:
            c |= 0x20
        if c != folded_name[i]:
            return False
    return True


cdef Py_ssize_t _ck_find(const unsigned char* s, Py_ssize_t end,
                         const unsigned char* folded_name, Py_ssize_t name_length,
                         Py_ssize_t* value_start) noexcept nogil:
    """nginx's scan of one header line: the end of the value (start in *value_start), or -1."""
    cdef Py_ssize_t pos = 0
    cdef unsigned char c
    cdef const unsigned char* semicolon
    if name_length > end:
        return -1
    while pos < end:
        if end - pos >= name_length and _ck_name_at(s + pos, folded_name, name_length):
            pos += name_length
            while pos < end and s[pos] == 0x20:  # nginx skips spaces only, not tabs
                pos += 1
            if pos < end:
                if s[pos] == 0x3d:  # "="
                    pos += 1
                    while pos < end and s[pos] == 0x20:
                        pos += 1
                    value_start[0] = pos
                    semicolon = <const unsigned char*>memchr(s + pos, 0x3b, end - pos)
                    return end if semicolon == NULL else semicolon - s
                pos += 1  # nginx consumes the byte after the name even when it is not "="
        # Not this cookie: skip past the next ";" or "," and the spaces after it.
        while pos < end:
            c = s[pos]
            pos += 1
            if c == 0x3b or c == 0x2c:
                break
        while pos < end and s[pos] == 0x20:
            pos += 1
    return -1


cdef object _ck_lookup_line(object line, bytes folded_name):
    cdef const unsigned char* s
    cdef Py_ssize_t length
    cdef Py_ssize_t value_start = 0
    cdef Py_ssize_t value_end
    cdef bytes holder
    if PyBytes_CheckExact(line):
        s = <const unsigned char*>PyBytes_AS_STRING(line)
        length = PyBytes_GET_SIZE(line)
    elif PyUnicode_Check(line) and _ck_unicode_kind(line) == _CK_1BYTE_KIND:
        # One byte per character is exactly the latin-1 reading: scan it in place.
        s = <const unsigned char*>_ck_unicode_data(line)
        length = _ck_unicode_length(line)
    else:
        holder = _ck_latin1_bytes(line, "header")
        s = <const unsigned char*>PyBytes_AS_STRING(holder)
        length = PyBytes_GET_SIZE(holder)
    value_end = _ck_find(s, length, <const unsigned char*>PyBytes_AS_STRING(folded_name),
                         PyBytes_GET_SIZE(folded_name), &value_start)
    if value_end < 0:
        return None
    return PyUnicode_DecodeLatin1(<const char*>(s + value_start), value_end - value_start, NULL)


def parse_cookie(header, name):
    """The value nginx gives for ``$cookie_<name>``, or ``None``.

    ``header`` is one Cookie header value (``str``, or ``bytes`` read as latin-1) or a list/tuple
    of them in the order they arrived.  The value is returned verbatim: quotes, commas and
    trailing spaces kept, nothing unescaped.  The first matching cookie wins.
    """
    cdef bytes folded_name = _ck_latin1_bytes(name, "name").lower()
    cdef object value
    if isinstance(header, (list, tuple)):
        for line in header:
            value = _ck_lookup_line(line, folded_name)
            if value is not None:
                return value
        return None
    return _ck_lookup_line(header, folded_name)


cdef inline bint _ck_is_token_char(Py_UCS4 c) noexcept:
    # RFC 6265 section 4.1.1: cookie-name is an RFC 2616 token.
    if c >= 0x7f or c <= 0x20:
        return False
    return c not in '()<>@,;:\\"/[]?={}'


cdef inline bint _ck_is_cookie_octet(Py_UCS4 c) noexcept:
    # cookie-octet: %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E (no CTL, space, DQUOTE,
    # comma, semicolon or backslash).
    return 0x21 <= c <= 0x7e and c != 0x22 and c != 0x2c and c != 0x3b and c != 0x5c


cdef str _ck_checked_attribute(str what, object text):
    cdef Py_UCS4 c
    if not PyUnicode_Check(text):
        raise CookieError(f"cookie {what} {text!r} has a control byte, ';' or non-ASCII")
    for c in <str>text:
        if c < 0x20 or c >= 0x7f or c == 0x3b:
            raise CookieError(f"cookie {what} {text!r} has a control byte, ';' or non-ASCII")
    return <str>text


_CK_SAME_SITE = {"strict": "Strict", "lax": "Lax", "none": "None"}


def build_set_cookie(name, value, *, path="/", domain=None, max_age=None, secure=False,
                     http_only=True, same_site=None, partitioned=False):
    """The value of a ``Set-Cookie`` header; ``CookieError`` for anything that could inject."""
    cdef Py_UCS4 c
    if not PyUnicode_Check(name) or len(<str>name) == 0:
        raise CookieError(f"cookie name {name!r} is not an RFC 6265 token")
    for c in <str>name:
        if not _ck_is_token_char(c):
            raise CookieError(f"cookie name {name!r} is not an RFC 6265 token")
    if not PyUnicode_Check(value):
        raise CookieError(f"cookie value {value!r} has a byte that RFC 6265 forbids")
    for c in <str>value:
        if not _ck_is_cookie_octet(c):
            raise CookieError(f"cookie value {value!r} has a byte that RFC 6265 forbids")
    parts = [f"{name}={value}"]
    if path is not None:
        parts.append(f"Path={_ck_checked_attribute('path', path)}")
    if domain is not None:
        parts.append(f"Domain={_ck_checked_attribute('domain', domain)}")
    if max_age is not None:
        if not isinstance(max_age, int) or isinstance(max_age, bool) or max_age < 0:
            raise CookieError(f"max_age must be a non-negative int, not {max_age!r}")
        parts.append(f"Max-Age={max_age}")
    canonical_same_site = None
    if same_site is not None:
        if not isinstance(same_site, str) or same_site.lower() not in _CK_SAME_SITE:
            raise CookieError(f"same_site must be Strict, Lax or None, not {same_site!r}")
        canonical_same_site = _CK_SAME_SITE[same_site.lower()]
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
