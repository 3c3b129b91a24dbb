"""benchmarks/capacity.py: the capacity figure from a curve, the targets, and a tiny real run of both
targets (a relay node and the picows peer, each in its own process) whose report is checked."""

from __future__ import annotations

import argparse
import json

import pytest

from benchmarks import capacity
from benchmarks.servers.picows_server import split_path

LIMIT_S = 0.050


def step(sessions, p99_ms, *, rss=None, loadgen=0.2, undelivered=0):
    return {"sessions": sessions, "latency_p99_s": p99_ms / 1000, "undelivered": undelivered,
            "expected_deliveries": sessions * 400, "loadgen_cpu_share": loadgen,
            "server_rss_bytes": rss if rss is not None else 10_000_000 + sessions * 1_000_000}


def curve(*steps, stopped="p99 above 50 ms"):
    return {"baseline_rss_bytes": 10_000_000, "steps": list(steps), "stopped_because": stopped}


def test_capacity_is_bracketed_by_the_steps_around_the_limit_and_interpolated_between_them():
    figure = capacity.capacity_of(curve(step(10, 2), step(20, 10), step(40, 90)), LIMIT_S)
    assert figure["passed_sessions"] == 20 and figure["failed_sessions"] == 40
    assert figure["estimate"] == pytest.approx(20 + (50 - 10) / (90 - 10) * 20)
    assert not figure["lower_bound"]


def test_a_run_that_never_reaches_the_limit_gives_a_lower_bound():
    figure = capacity.capacity_of(curve(step(10, 2), step(20, 3), stopped="last step"), LIMIT_S)
    assert figure["estimate"] == 20 and figure["lower_bound"] and figure["failed_sessions"] is None
    saturated = capacity.capacity_of(curve(step(10, 2), step(20, 80, loadgen=0.95)), LIMIT_S)
    assert saturated["lower_bound"] and "load generator was saturated" in saturated["note"]


def test_undelivered_messages_fail_a_step_whatever_its_p99():
    figure = capacity.capacity_of(curve(step(10, 2), step(20, 3, undelivered=1000)), LIMIT_S)
    assert figure["passed_sessions"] == 10 and figure["failed_sessions"] == 20


def test_memory_grows_by_the_slope_over_the_steps_under_the_limit():
    memory = capacity.memory_curve(curve(step(10, 2), step(20, 3), step(40, 90, rss=1)), LIMIT_S)
    assert memory["slope_bytes_per_session"] == pytest.approx(1_000_000)
    assert memory["per_session_bytes"][20] == pytest.approx(1_000_000)


def test_relay_against_picows_compares_capacity_and_memory_at_the_largest_common_step():
    relay = curve(step(10, 2, rss=10_000_000 + 10 * 3_000_000), step(20, 60))
    picows = curve(step(10, 1, rss=10_000_000 + 10 * 1_000_000), step(20, 2), stopped="last step")
    compared = capacity.comparison({"relay": [relay], "picows": [picows]}, LIMIT_S)
    assert compared["memory_at_sessions"] == [10]
    assert compared["memory_per_session"]["median"] == pytest.approx(3.0)
    assert compared["capacity"]["median"] == pytest.approx(capacity.capacity_of(relay, LIMIT_S)["estimate"] / 20)


def test_targets_are_named_and_an_unknown_one_is_refused_with_the_known_ones():
    assert capacity.parse_target("relay").protocol == "relay"
    assert capacity.parse_target("picows").protocol == "plain"
    with pytest.raises(argparse.ArgumentTypeError, match="known targets are relay, picows"):
        capacity.parse_target("nginx-cluster")


def test_picows_channels_come_from_the_path():
    assert split_path("/pub/s12") == ("pub", "s12")
    assert split_path("/sub/s12?x=1") == ("sub", "s12")
    assert split_path("/sub") == ("sub", "")


@pytest.mark.slow
def test_a_tiny_run_of_both_targets_reports_every_step_and_the_ratio(tmp_path, capsys):
    out = tmp_path / "capacity.json"
    # A limit no loopback run reaches, so that both steps run whatever else loads the machine.
    code = capacity.main(["--quick", "--steps", "2,3", "--step-s", "0.6", "--p99-limit-ms", "60000",
                          "--no-install", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "relay / picows (same run): capacity" in printed and printed.count("capacity: at least 3 sessions") == 2
    document = json.loads(out.read_text())
    assert document["suite"] == "capacity" and document["settings"]["targets"] == ["relay", "picows"]
    for name in ("relay", "picows"):
        (result,) = document["results"][name]
        assert [s["sessions"] for s in result["steps"]] == [2, 3]
        assert result["baseline_rss_bytes"] > 0
        for measured in result["steps"]:
            # Every message sent in the window reached both slaves of its session, in order.
            assert measured["sent_mutations"] > 0
            assert measured["delivered"] == measured["expected_deliveries"] == \
                2 * (measured["sent_mutations"] + measured["sent_snapshots"])
            assert measured["undelivered"] == 0 and measured["out_of_order"] == 0 and measured["lost_connections"] == 0
            assert 0 < measured["latency_p50_s"] <= measured["latency_p99_s"] <= measured["latency_max_s"]
            assert measured["server_rss_bytes"] > 0 and measured["server_cpu_share"] is not None
            assert measured["loadgen_cpu_share"] > 0
    assert document["relay_vs_picows"]["capacity"]["rounds"] == 1
    assert document["figures"]["relay"][0]["capacity"]["lower_bound"]
