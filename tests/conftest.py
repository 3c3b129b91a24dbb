"""Session-wide checks: the suite must run on the implementation it claims to test.

scripts/test runs the suite twice.  With RELAY_EXPECT_FASTPATH=1 the session refuses to start
unless the compiled twin is active, so a failed build can never pass as a fast-path run; with
RELAY_PUREPYTHON=1 it refuses to start unless the pure twin is active.
"""

from __future__ import annotations

import os

import pytest


def _flag(name: str) -> bool:
    # The same reading of an on/off variable as relay._accel and setup.py.
    return os.environ.get(name, "") not in ("", "0")


def _active_implementation() -> tuple[bool | None, str]:
    """(fast path active?, description); (None, why) when relay cannot be imported at all."""
    try:
        import relay._accel as accel
    except Exception as exc:  # a broken twin must show in the header, not as a crash here
        return None, f"relay._accel not importable: {exc!r}"
    active = accel.fastpath_active()
    try:
        import relay
    except Exception:
        relay = None
    # Once relay/__init__.py re-exports the switch, both views must agree.
    public = getattr(relay, "fastpath_active", None)
    if public is not None and public() != active:
        return None, f"relay.fastpath_active() is {public()} but relay._accel says {active}"
    return active, accel.implementation()


def pytest_report_header(config):
    active, description = _active_implementation()
    return f"relay implementation: {description}"


def pytest_sessionstart(session):
    active, description = _active_implementation()
    if _flag("RELAY_EXPECT_FASTPATH") and active is not True:
        raise pytest.UsageError(
            "RELAY_EXPECT_FASTPATH is set but the Cython fast path is not active: "
            f"{description}. Build it with `python setup.py build_ext --inplace` to see why."
        )
    if _flag("RELAY_PUREPYTHON") and active is not False:
        raise pytest.UsageError(
            f"RELAY_PUREPYTHON is set but the pure-Python twin is not active: {description}"
        )
