"""A short soak in the default run: two waves of sessions, then nothing may be left behind.

The long one is ``python scripts/soak.py --seconds 120`` (see scripts/soak.py).
"""

import pytest

import soak

pytestmark = pytest.mark.slow


async def test_sessions_come_and_go_without_leaks():
    result = await soak.soak(seconds=3.0, sessions=20, slaves=2, messages=20, report=lambda *_: None)
    assert result["waves"] >= 2
    assert result["messages_delivered"] == result["sessions"] * 2 * 20
    assert result["final"]["sessions"] == 0 and result["final"]["connections"] == 0
    assert result["leaks"] == [], result
