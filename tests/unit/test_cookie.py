"""Cookie lookup (nginx's $cookie_NAME) and Set-Cookie building (docs/fastpath.md, section 3)."""

from __future__ import annotations

import re
from http.cookies import SimpleCookie

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import relay._fastpath as fast_twin
import relay._purepath.cookie as pure_twin
from relay._errors import CookieError
from helpers import load_corpus




COOKIES = load_corpus("cookies")
COOKIE_CASES = COOKIES.COOKIE_CASES
TWINS = [pytest.param(pure_twin, id="pure"), pytest.param(fast_twin, id="cython")]
SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def nginx_model(header_lines, name):
    """A literal, byte-at-a-time transcription of ngx_http_parse_multi_header_lines
    (nginx src/http/ngx_http_parse.c), with ngx_strncasecmp's ASCII-only folding.  Slow but
    obviously the same as the C; the twins are checked against it."""

    def fold(byte):
        return byte | 0x20 if 0x41 <= byte <= 0x5A else byte

    if not isinstance(header_lines, (list, tuple)):
        header_lines = [header_lines]
    wanted = name.encode("latin-1") if isinstance(name, str) else bytes(name)
    for line in header_lines:
        value = line.encode("latin-1") if isinstance(line, str) else bytes(line)
        if len(wanted) > len(value):
            continue
        start, end = 0, len(value)
        while start < end:
            matched = end - start >= len(wanted) and all(
                fold(value[start + i]) == fold(wanted[i]) for i in range(len(wanted)))
            if matched:
                start += len(wanted)
                while start < end and value[start] == 0x20:
                    start += 1
                if start == end:
                    matched = False
                else:
                    byte = value[start]
                    start += 1
                    if byte != 0x3D:
                        matched = False
                if matched:
                    while start < end and value[start] == 0x20:
                        start += 1
                    last = start
                    while last < end and value[last] != 0x3B:
                        last += 1
                    return value[start:last].decode("latin-1")
            # skip:
            while start < end:
                byte = value[start]
                start += 1
                if byte in (0x3B, 0x2C):
                    break
            while start < end and value[start] == 0x20:
                start += 1
    return None


# -- lookup -----------------------------------------------------------------------------------

@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("case", COOKIE_CASES, ids=[c["why"][:60] for c in COOKIE_CASES])
def test_corpus(twin, case):
    assert twin.parse_cookie(case["header"], case["name"]) == case["expected"]
    assert nginx_model(case["header"], case["name"]) == case["expected"]


def _single_lines():
    return [c for c in COOKIE_CASES if isinstance(c["header"], (str, bytes))]


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("case", _single_lines(), ids=lambda c: c["why"][:60])
def test_every_prefix_and_trailing_data(twin, case):
    header, name = case["header"], case["name"]
    step = max(1, len(header) // 200)  # the 16 KiB cases: every 82nd prefix, plus the ends
    cuts = sorted(set(range(0, len(header) + 1, step)) | {len(header) - 1, len(header)})
    for cut in cuts:
        prefix = header[: max(cut, 0)]
        assert twin.parse_cookie(prefix, name) == nginx_model(prefix, name), cut
    if case["expected"] is not None:
        # a found value runs to the next ";" and the first match wins, whatever follows
        trailing = header + (b"; " if isinstance(header, bytes) else "; ") + (
            name.encode("latin-1") if isinstance(header, bytes) else name) + (
            b"=later" if isinstance(header, bytes) else "=later")
        assert twin.parse_cookie(trailing, name) == case["expected"]
        assert twin.parse_cookie([header, f"{name}=next-line"], name) == case["expected"]


@pytest.mark.parametrize("twin", TWINS)
def test_str_bytes_and_lists_agree(twin):
    header = "a=1; gcbSessionServer=\xe9t\xe9; b=2"
    assert twin.parse_cookie(header, "gcbSessionServer") == "\xe9t\xe9"
    assert twin.parse_cookie(header.encode("latin-1"), "gcbSessionServer") == "\xe9t\xe9"
    assert twin.parse_cookie(bytearray(header.encode("latin-1")), "gcbSessionServer") == "\xe9t\xe9"
    assert twin.parse_cookie((header,), b"GCBSESSIONSERVER") == "\xe9t\xe9"
    assert twin.parse_cookie(["x=1", header.encode("latin-1")], "gcbSessionServer") == "\xe9t\xe9"


@pytest.mark.parametrize("twin", TWINS)
def test_bad_arguments(twin):
    with pytest.raises(TypeError):
        twin.parse_cookie(12, "a")
    with pytest.raises(TypeError):
        twin.parse_cookie("a=1", 12)
    with pytest.raises(TypeError):
        twin.parse_cookie(["a=1", None], "b")
    with pytest.raises(UnicodeEncodeError):  # a str header is latin-1 text by contract
        twin.parse_cookie("a=\u20ac", "a")


def test_differs_from_simplecookie_where_nginx_does():
    """The reason this parser exists: SimpleCookie picks another server than nginx does."""
    header = "gcbSessionServer=first; gcbSessionServer=second"
    jar = SimpleCookie()
    jar.load(header)
    assert jar["gcbSessionServer"].value == "second"
    assert pure_twin.parse_cookie(header, "gcbSessionServer") == "first"
    assert fast_twin.parse_cookie(header, "gcbSessionServer") == "first"


cookie_alphabet = st.sampled_from(
    list("aAbB=;, \"\\\t") + ["\x00", "\x01", "\x7f", "\xc0", "\xe0", "\xff"]
)
names = st.sampled_from(["a", "A", "ab", "aB", "b", "\xc0", "a b", "a=", ""])
headers = st.text(cookie_alphabet, max_size=40)
header_lists = st.lists(headers | headers.map(lambda h: h.encode("latin-1")), max_size=4)


@SETTINGS
@given(header=headers | header_lists, name=names)
def test_twins_agree_with_the_nginx_model(header, name):
    expected = nginx_model(header, name)
    assert pure_twin.parse_cookie(header, name) == expected
    assert fast_twin.parse_cookie(header, name) == expected


@SETTINGS
@given(cookies=st.lists(st.tuples(st.sampled_from(["s", "S", "xs", "sx", "t"]),
                                  st.text(st.sampled_from("v\"\\ ,="), max_size=6)),
                        max_size=6),
       separator=st.sampled_from(["; ", ";", ", ", ";  "]))
def test_well_formed_headers(cookies, separator):
    header = separator.join(f"{name}={value}" for name, value in cookies)
    expected = nginx_model(header, "s")
    assert pure_twin.parse_cookie(header, "s") == expected
    assert fast_twin.parse_cookie(header, "s") == expected


def test_linear_work_in_the_pure_twin(monkeypatch):
    """Count the scanning steps instead of timing them: one skip per separator at most, so a
    16 KiB header of backslashes and quotes is one scan, not a quadratic unescape."""
    steps = []
    real = pure_twin._NEXT_COOKIE

    class CountingPattern:
        def search(self, text, pos):
            steps.append(pos)
            return real.search(text, pos)

    monkeypatch.setattr(pure_twin, "_NEXT_COOKIE", CountingPattern())
    adversarial = ('"' + '\\"' * 8192) * 2
    assert pure_twin.parse_cookie(adversarial, "gcbSessionServer") is None
    assert len(steps) == 1
    steps.clear()
    many = "a;" * 8192
    assert pure_twin.parse_cookie(many, "gcbSessionServer") is None
    assert len(steps) <= many.count(";") + 1
    assert steps == sorted(set(steps)), "the scan never moves backwards"


@pytest.mark.parametrize("twin", TWINS)
def test_adversarial_16k(twin):
    adversarial = '"' + "\\" * (16 * 1024) + '"'
    assert twin.parse_cookie(adversarial + "; s=1", "s") == "1"
    assert twin.parse_cookie("s=" + adversarial, "s") == adversarial
    assert twin.parse_cookie(adversarial * 10, "s") is None


# -- Set-Cookie -------------------------------------------------------------------------------

@pytest.mark.parametrize("twin", TWINS)
def test_set_cookie_shapes(twin):
    build = twin.build_set_cookie
    assert build("gcbSessionServer", "CB_Server_1", same_site="lax") == (
        "gcbSessionServer=CB_Server_1; Path=/; HttpOnly; SameSite=Lax")
    assert build("a", "1") == "a=1; Path=/; HttpOnly"
    assert build("a", "", path=None, http_only=False) == "a="
    assert build("a", "1", same_site="STRICT", max_age=0, domain="example.com", secure=True) == (
        "a=1; Path=/; Domain=example.com; Max-Age=0; Secure; HttpOnly; SameSite=Strict")
    assert build("a", "1", same_site="none") == "a=1; Path=/; Secure; HttpOnly; SameSite=None"
    assert build("a", "1", partitioned=True, http_only=False) == (
        "a=1; Path=/; Secure; Partitioned")
    assert build("a", "1", max_age=3600, path="/relay") == (
        "a=1; Path=/relay; Max-Age=3600; HttpOnly")


INJECTIONS = ["\r\n", "\n", "\r", "\x00", "\x1f", "\x7f", ";"]


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("bad", INJECTIONS + [" ", '"', ",", "\\", "\xe9", "\u2028"])
def test_set_cookie_refuses_unsafe_values(twin, bad):
    with pytest.raises(CookieError):
        twin.build_set_cookie("a", f"x{bad}Set-Cookie: evil=1")
    with pytest.raises(CookieError):
        twin.build_set_cookie(f"a{bad}", "1")


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("bad", INJECTIONS + ["\xe9"])
def test_set_cookie_refuses_unsafe_attributes(twin, bad):
    with pytest.raises(CookieError):
        twin.build_set_cookie("a", "1", path=f"/x{bad}Domain=evil")
    with pytest.raises(CookieError):
        twin.build_set_cookie("a", "1", domain=f"example.com{bad}")


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize(
    "kwargs",
    [dict(max_age=-1), dict(max_age=1.5), dict(max_age="10"), dict(max_age=True),
     dict(same_site="sometimes"), dict(same_site=1), dict(path=b"/"), dict(domain=3)],
)
def test_set_cookie_refuses_bad_attributes(twin, kwargs):
    with pytest.raises(CookieError):
        twin.build_set_cookie("a", "1", **kwargs)


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("name", ["", "a=b", "a b", "a(b", "a/b", "a:b", "a?", "{a}", 7, None])
def test_set_cookie_refuses_bad_names(twin, name):
    with pytest.raises(CookieError):
        twin.build_set_cookie(name, "1")


CONTROL_OR_ODD = st.characters(max_codepoint=0x2FF) | st.sampled_from(["\u2028", "\ud800"])


@SETTINGS
@given(name=st.text(CONTROL_OR_ODD, max_size=8), value=st.text(CONTROL_OR_ODD, max_size=12),
       path=st.none() | st.text(CONTROL_OR_ODD, max_size=8),
       domain=st.none() | st.text(CONTROL_OR_ODD, max_size=8),
       same_site=st.sampled_from([None, "lax", "Strict", "NONE", "bogus"]))
def test_set_cookie_twins_agree_and_never_inject(name, value, path, domain, same_site):
    results = []
    for twin in (pure_twin, fast_twin):
        try:
            results.append(twin.build_set_cookie(name, value, path=path, domain=domain,
                                                 same_site=same_site))
        except CookieError:
            results.append(CookieError)
    assert results[0] == results[1]
    header = results[0]
    if header is CookieError:
        return
    assert header.isascii() and not re.search(r"[\x00-\x1f\x7f]", header)
    # the cookie reads back, through nginx's eyes, as exactly what was set
    assert nginx_model(header, name) == value
    assert pure_twin.parse_cookie(header, name) == value
    # and no attribute was smuggled in: the parts are exactly the ones asked for
    attributes = [part.split("=", 1)[0] for part in header.split("; ")[1:]]
    expected = (["Path"] if path is not None else []) + (["Domain"] if domain is not None else [])
    assert attributes[: len(expected)] == expected
    assert header.count(";") == len(attributes)
