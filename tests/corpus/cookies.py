"""Cookie headers that trip parsers, with the value nginx gives for ``$cookie_<name>``.

Each case: ``header`` (one Cookie header value, or a list of them in arrival order), ``name``,
``expected`` (the value, or ``None`` when nginx finds no such cookie) and ``why``.  The expected
values follow ngx_http_parse_multi_header_lines (src/http/ngx_http_parse.c) step by step, not
RFC 6265 and not http.cookies.SimpleCookie.
"""

SESSION = "gcbSessionServer"

BACKSLASH_QUOTE_16K = '"' + "\\" * (16 * 1024 - 2) + '"'

COOKIE_CASES = [
    # plain
    dict(header="gcbSessionServer=CB_Server_1", name=SESSION, expected="CB_Server_1",
         why="the only cookie"),
    dict(header="a=1; gcbSessionServer=CB_Server_2; b=3", name=SESSION, expected="CB_Server_2",
         why="in the middle"),
    dict(header="a=1; b=2", name=SESSION, expected=None, why="absent"),
    dict(header="", name=SESSION, expected=None, why="empty header"),
    dict(header=[], name=SESSION, expected=None, why="no header line at all"),
    # duplicates and header lines
    dict(header="gcbSessionServer=first; gcbSessionServer=second", name=SESSION,
         expected="first", why="duplicates: the first wins (SimpleCookie keeps the last)"),
    dict(header=["a=1", "gcbSessionServer=line2", "gcbSessionServer=line3"], name=SESSION,
         expected="line2", why="several header lines are searched in order"),
    dict(header=["gcbSessionServer", "gcbSessionServer=2"], name=SESSION, expected="2",
         why="a line where the name has no '=' does not stop the search of the next line"),
    dict(header=[b"x=1", b"GCBSESSIONSERVER=bytes"], name=SESSION, expected="bytes",
         why="bytes header lines"),
    # names that contain or end with the name
    dict(header="xgcbSessionServer=1; gcbSessionServer=2", name=SESSION, expected="2",
         why="the name as a suffix of another name is not a match"),
    dict(header="gcbSessionServerX=1; gcbSessionServer=2", name=SESSION, expected="2",
         why="the name as a prefix of another name: the byte after the name is not '='"),
    dict(header="gcbSessionServerX=1", name=SESSION, expected=None,
         why="only a longer name"),
    dict(header="a=gcbSessionServer=1", name=SESSION, expected=None,
         why="the name inside a value is not at a cookie start"),
    dict(header="a=x,gcbSessionServer=3", name=SESSION, expected="3",
         why="',' also starts a new cookie when skipping"),
    # case
    dict(header="GCBSESSIONSERVER=upper", name=SESSION, expected="upper",
         why="the name is compared case-insensitively"),
    dict(header="gcbsessionserver=lower", name="GCBSessionServer", expected="lower",
         why="case-insensitive in the other direction"),
    dict(header="\xe0=1; \xc0=2", name="\xc0", expected="2",
         why="only ASCII letters fold, like ngx_strncasecmp (latin-1 \\xe0 is not \\xc0)"),
    # spaces
    dict(header="gcbSessionServer = spaced", name=SESSION, expected="spaced",
         why="spaces around '=' are skipped"),
    dict(header="gcbSessionServer=trailing   ; x=1", name=SESSION, expected="trailing   ",
         why="trailing spaces are kept"),
    dict(header="a=1;   gcbSessionServer=after-spaces", name=SESSION, expected="after-spaces",
         why="spaces after ';' are skipped"),
    dict(header=" gcbSessionServer=lead", name=SESSION, expected=None,
         why="a leading space of the line is not skipped (nginx strips it when parsing headers)"),
    dict(header="a=1;\tgcbSessionServer=tab", name=SESSION, expected=None,
         why="only spaces are skipped, not tabs"),
    dict(header="gcbSessionServer\t=tab", name=SESSION, expected=None,
         why="a tab between name and '=' is not skipped"),
    # quotes and backslashes: nothing is unquoted or unescaped
    dict(header='gcbSessionServer="quoted"', name=SESSION, expected='"quoted"',
         why="quotes are kept"),
    dict(header='gcbSessionServer="a;b"; x=1', name=SESSION, expected='"a',
         why="a quoted ';' still ends the value"),
    dict(header='gcbSessionServer="a,b"; x=1', name=SESSION, expected='"a,b"',
         why="a ',' does not end the value"),
    dict(header='a="x;gcbSessionServer=in-quotes"', name=SESSION, expected='in-quotes"',
         why="a ';' inside quotes starts a new cookie when skipping"),
    dict(header='gcbSessionServer="\\"\\\\"', name=SESSION, expected='"\\"\\\\"',
         why="backslashes are kept"),
    dict(header=BACKSLASH_QUOTE_16K + "; gcbSessionServer=late", name=SESSION, expected="late",
         why="16 KiB of backslashes between quotes, then the cookie (CVE-2024-7592 shape)"),
    dict(header="gcbSessionServer=" + BACKSLASH_QUOTE_16K, name=SESSION,
         expected=BACKSLASH_QUOTE_16K, why="a 16 KiB value of backslashes"),
    dict(header="\\" * (16 * 1024), name=SESSION, expected=None, why="16 KiB of backslashes"),
    # missing "=" and empty values
    dict(header="gcbSessionServer", name=SESSION, expected=None, why="name without '='"),
    dict(header="gcbSessionServer; gcbSessionServer=2", name=SESSION, expected=None,
         why="nginx quirk: the ';' after a bare name is consumed, so the skip eats the next cookie"),
    dict(header="gcbSessionServer;gcbSessionServer=2; gcbSessionServer=3", name=SESSION,
         expected="3", why="the same quirk eats one cookie only"),
    dict(header="a;a=1", name="a", expected=None, why="the same quirk, shortest form"),
    dict(header="a;a=1;a=2", name="a", expected="2", why="the quirk skips one cookie only"),
    dict(header="gcbSessionServer=", name=SESSION, expected="", why="empty value"),
    dict(header="gcbSessionServer=; b=2", name=SESSION, expected="", why="empty value then more"),
    dict(header="gcbSessionServer=   ", name=SESSION, expected="", why="value of spaces only"),
    dict(header="=1; gcbSessionServer=2", name=SESSION, expected="2", why="empty name first"),
    dict(header="gcbSessionServer==x", name=SESSION, expected="=x", why="'=' inside the value"),
    dict(header="gcbSessionServer  x=1", name=SESSION, expected=None,
         why="spaces then not '=': no match, the rest is skipped"),
    dict(header=";;;, ,gcbSessionServer=sep", name=SESSION, expected="sep",
         why="runs of separators"),
    dict(header="gcbSessionServe", name=SESSION, expected=None,
         why="header shorter than the name"),
    # control and non-ASCII bytes are kept verbatim
    dict(header="gcbSessionServer=a\x01b\x7fc", name=SESSION, expected="a\x01b\x7fc",
         why="control bytes are kept"),
    dict(header=b"gcbSessionServer=caf\xc3\xa9", name=SESSION, expected="caf\xc3\xa9",
         why="bytes are read as latin-1, so UTF-8 comes back as latin-1 characters"),
    dict(header="x=\x00; gcbSessionServer=after-nul", name=SESSION, expected="after-nul",
         why="a NUL byte is an ordinary byte (nginx refuses it earlier, at header parsing)"),
]
