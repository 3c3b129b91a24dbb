"""benchmarks/fanout.py's plan and verdicts, and benchmarks/_setup.py's refusals (no server is run)."""

from __future__ import annotations

import sys

from benchmarks import _setup, fanout
from benchmarks._stats import MIN_RATIO_ROUNDS


def test_the_sweep_covers_every_power_of_two_from_1_kib_to_16_mib_against_picows():
    cases = fanout.build_plan(dict(fanout.SWEEP_PLAN), ["relay", "picows", "trio-websocket"])
    sweep = [case for case in cases if case.workload == "sweep"]
    assert [case.options["size"] for case in sweep] == [2**n for n in range(10, 25)]
    assert all(case.servers == ["relay", "picows"] and case.rounds >= MIN_RATIO_ROUNDS for case in sweep)
    assert all(case.options["window_bytes"] >= 2 * 16 * 2**20 for case in sweep)
    full = fanout.build_plan(dict(fanout.PLANS["full"]), list(fanout.SERVERS))
    assert {case.key for case in sweep} <= {case.key for case in full}


def sample(rate):
    return {"messages_per_s": rate, "delivered_bytes_per_s": rate * 4 * 2**20}


def test_verdicts_come_from_per_round_ratios_and_say_within_spread():
    cases = [fanout.Case("fanout/4/1048576", "fanout", ["relay", "picows"], 3, {"slaves": 4, "size": 2**20}, 1, "")]
    samples = {"fanout/4/1048576": {"relay": [sample(100), sample(60), {"error": "x"}],
                                    "picows": [sample(90), sample(100), sample(100)]}}
    ratios = fanout.round_ratios(cases, samples)
    stats = ratios["fanout/4/1048576"]["picows"]
    assert stats["rounds"] == 2 and stats["min"] == 0.6 and round(stats["max"], 3) == 1.111
    verdicts = fanout.judge(fanout.summarize(cases, samples), None, ratios)
    assert verdicts[0]["target"].startswith("1 -> 4, 1 MiB") and verdicts[0]["verdict"] == "within spread"


def test_stamping_cost_compares_with_the_reference_run():
    reference = fanout.load_reference()
    assert reference is not None, "the reference run is committed under benchmarks/results/reference/"
    case = fanout.Case("fanout/4/1048576", "fanout", ["relay", "picows"], 5, {"slaves": 4, "size": 2**20}, 1, "x")
    runs = reference["samples"]["fanout/4/1048576"]
    ratios = fanout.round_ratios([case], {case.key: runs})  # the reference against itself: factor 1
    (row,) = fanout.stamping_cost([case], ratios, reference)
    assert abs(row["factor"]["median"] - 1.0) < 1e-9 and row["factor"]["within_spread"]


def test_setup_refuses_the_base_interpreter(monkeypatch):
    said = []
    monkeypatch.setattr(_setup, "missing_peers", lambda: ["picows"])
    monkeypatch.setattr(sys, "prefix", sys.base_prefix)
    assert _setup.ensure_peers(said.append) is False
    assert "refusing" in said[0] and "base interpreter" in said[0]


def test_setup_does_nothing_when_everything_is_there(monkeypatch):
    monkeypatch.setattr(_setup, "missing_peers", lambda: [])
    monkeypatch.setattr(_setup.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(_setup.subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")))
    assert _setup.ensure_peers() and _setup.ensure_iperf3()


def test_setup_without_root_says_what_to_run(monkeypatch):
    said = []
    monkeypatch.setattr(_setup.shutil, "which", lambda name: None if name == "iperf3" else f"/usr/bin/{name}")
    monkeypatch.setattr(_setup.os, "geteuid", lambda: 1000)
    assert _setup.ensure_iperf3(said.append) is False
    assert "sudo apt-get install -y iperf3" in said[0]
