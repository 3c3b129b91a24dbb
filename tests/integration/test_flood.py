"""Floods against a relay node process: memory stays within its budget, the loop keeps serving others.

Each scenario of scripts/flood.py runs for SECONDS against a fresh node with small limits
(flood.ATTACK_LIMITS).  A scenario passes when the node's peak RSS stays within the documented
budget (docs/memory.md), a bystander session on other connections kept flowing (p99 below
flood.BYSTANDER_P99_LIMIT_S: a check that the trio loop is not frozen, not a speed benchmark), and
the node answered what the spec says: 1008 for refusal floods, 429 for refusal-flood POSTs, drops
for allowed floods to a master that does not read, resync/1013 for slaves that do not read.

The longer run is ``python scripts/flood.py --seconds 120``.
"""

from __future__ import annotations

import pytest
import trio

import flood

pytestmark = pytest.mark.slow

SECONDS = 3.0
# A scenario's whole run: node start, warm-up, flood, the slowest long-poll POST, settle, metrics.
SCENARIO_TIMEOUT_S = SECONDS + flood.POST_ANSWER_TIMEOUT_S + 30



@pytest.mark.parametrize("name", [scenario.name for scenario in flood.SCENARIOS])
async def test_flood_stays_within_budget_and_the_node_keeps_serving(name):
    with trio.fail_after(SCENARIO_TIMEOUT_S):
        report = await flood.run_scenario(flood.SCENARIOS_BY_NAME[name], SECONDS)
    text = flood.format_report(report)
    assert report["aborted"] is None, text
    assert report["flooders"]["envelopes_sent"] > 0, text
    assert report["rss_peak_bytes"] <= report["limit_bytes"], text
    assert report["bystander"]["messages"] > 0, text
    assert report["bystander"]["p99_s"] < flood.BYSTANDER_P99_LIMIT_S, text
    assert flood.check(report) == [], text


def _report(**changes) -> dict:
    """A passing report of the shape run_scenario returns, with ``changes`` applied."""
    report = {
        "aborted": None, "rss_peak_bytes": 50 * flood.MiB, "limit_bytes": 100 * flood.MiB,
        "budget_bytes": 30 * flood.MiB, "transport": "ws", "expect": "1008",
        "bystander": {"messages": 100, "lost": 0, "p50_s": 0.001, "p99_s": 0.01, "max_s": 0.02},
        "flooders": {"envelopes_sent": 10, "http_statuses": {}},
        "node": {"closes": {"1008": 1}, "flood_closed": 1, "dropped_to_master": 0, "resyncs": 0, "slow_closed": 0},
    }
    report.update(changes)
    return report


def test_the_verdict_fails_on_memory_on_a_frozen_loop_and_on_a_wrong_answer():
    assert flood.check(_report()) == []
    assert "RSS peak" in flood.check(_report(rss_peak_bytes=101 * flood.MiB))[0]
    frozen = {"messages": 100, "lost": 3, "p50_s": 0.5, "p99_s": 2.0, "max_s": 2.5}
    assert "bystander p99" in flood.check(_report(bystander=frozen))[0]
    assert "1008" in flood.check(_report(node={"closes": {}, "flood_closed": 0}))[0]
    assert "429" in flood.check(_report(transport="poll", expect="429",
                                        flooders={"envelopes_sent": 10, "http_statuses": {"200": 3}}))[0]
    assert "dropped" in flood.check(_report(expect="drops", node={"dropped_to_master": 0, "flood_closed": 0}))[0]
    assert "resync" in flood.check(_report(expect="resync", node={"resyncs": 0, "slow_closed": 0}))[0]


def test_the_budget_counts_queues_history_connections_and_posts():
    limits = flood.ATTACK_LIMITS
    one = flood.budget(limits, [3], connections=3, posts_in_flight=0)["budget_bytes"]
    assert one == (3 * limits["slave_queue_bytes"] + limits["history_hard_limit_bytes"]
                   + 3 * (flood.PER_CONNECTION_BYTES + limits["max_message_bytes"]))
    with_post = flood.budget(limits, [3], connections=3, posts_in_flight=1)
    assert with_post["budget_bytes"] - one == flood.POST_BODY_COPIES * limits["poll_body_bytes"]
    assert with_post["limit_bytes"] == int(flood.BUDGET_MARGIN * with_post["budget_bytes"] + flood.BASELINE_BYTES)


def test_a_long_poll_flood_body_holds_one_and_a_half_million_envelopes_when_they_fit():
    pointer = flood.SCENARIOS_BY_NAME["poll-slave-pointer"]
    body = flood.poll_body(pointer, flood.ATTACK_LIMITS["poll_body_bytes"])
    assert flood.body_envelopes(body) == flood.LONG_POLL_ENVELOPES
    assert len(body) <= flood.ATTACK_LIMITS["poll_body_bytes"]
    padded = flood.poll_body(flood.SCENARIOS_BY_NAME["poll-slave-chat-padded"], flood.ATTACK_LIMITS["poll_body_bytes"])
    assert len(padded) <= flood.ATTACK_LIMITS["poll_body_bytes"]
