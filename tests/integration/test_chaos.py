"""A short chaos run in the default suite (issue 11): redis-server, three relay nodes and nginx, two
sessions with two slaves each, three kill -9s of a session's host (scripts/chaos.py has the engine;
``.venv/bin/python scripts/chaos.py --seconds 300`` is the long one).

After every takeover each slave's page (the digest of its snapshot and the mutations it applied) must
equal its master's, with no seq duplicated or out of order and no message applied twice; a takeover
from the failover copy needs no snapshot again, and the masters re-send far less than full snapshots.
"""

import pytest

import chaos

pytestmark = pytest.mark.slow

KILLS = 3


async def test_kill_9_of_hosts_loses_nothing_and_repeats_nothing():
    config = chaos.Config(seconds=60, sessions=2, slaves=2, seed=11, kills=KILLS,
                          snapshot_every_s=0,  # one snapshot per session: a re-send of one would show
                          kill_gap_s=(1.5, 3.0), restart_after_s=(0.3, 1.5))
    summary = await chaos.chaos(config, report=lambda *_: None)
    assert summary["ok"], chaos.format_summary(summary) + "\n" + summary.get("node_logs", "")[-8000:]
    assert summary["kills"] == KILLS
    assert summary["takeovers"] >= KILLS
    assert summary["takeovers_from_copy"] >= 1, summary["per_kill"]
    for kill in summary["per_kill"]:
        # Every client of the killed host's sessions came back and got a new message.
        assert len(kill["first_message_s"]) == kill["sessions"] * config.slaves, kill
        if kill["takeovers_from_copy"] == kill["takeovers"]:
            # The copy was complete: the stream continued, nobody needed a snapshot again.
            assert kill["snapshots_resent"] == 0 and kill["snapshots_avoided"] >= kill["sessions"], kill
            assert kill["slaves_replaced"] == 0 and kill["slaves_resumed"] >= kill["sessions"] * config.slaves, kill
            assert kill["slave_snapshots_again"] == 0, kill
    assert summary["resent_bytes"] < summary["full_snapshot_bytes"] / 2, summary["per_kill"]
    assert summary["number_gaps"] == 0
    assert summary["messages_applied"] > 0 and summary["messages_sent"] > 0
