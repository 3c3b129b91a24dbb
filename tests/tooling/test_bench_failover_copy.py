"""benchmarks/failover_copy.py's checks and figures, and the load generator's snapshots (no server is run)."""

from __future__ import annotations


import pytest

from benchmarks import failover_copy
from benchmarks.loadgen import parse_args
from benchmarks.loadgen.fanout import Fanout
from benchmarks.loadgen.stamp import MUTATION_KIND, SNAPSHOT_KIND, make_template, read_stamp


def sample(copied: float, writes: float = 1) -> dict:
    return {"copy_bytes": copied, "copy_writes": writes}


def test_a_copy_on_round_that_wrote_nothing_is_an_error_not_a_figure():
    with pytest.raises(RuntimeError, match="wrote nothing"):
        failover_copy.check_copy_ran(1024, {"copy on": [sample(10), sample(0, 0)], "copy off": [sample(0)]})
    with pytest.raises(RuntimeError, match="wrote in a 'copy off' round"):
        failover_copy.check_copy_ran(1024, {"copy on": [sample(10)], "copy off": [sample(5)]})
    failover_copy.check_copy_ran(1024, {"copy on": [sample(10)], "copy off": [sample(0, 0)]})


def test_distribution_gives_p50_p90_and_max_of_the_kills():
    figures = failover_copy.distribution([float(v) for v in range(1, 21)])
    assert figures == {"p50": 10.5, "p90": 18.0, "min": 1.0, "max": 20.0, "n": 20}


def test_every_target_size_is_measured():
    assert set(failover_copy.COST_TARGETS) <= set(failover_copy.SIZES)
    assert failover_copy.PLANS["full"]["kills"] >= 20


def test_the_load_generator_sends_a_snapshot_after_every_so_many_bytes_of_mutations():
    args = parse_args(["--target", "relay", "--port", "1", "--size", "1024", "--count", "10",
                       "--snapshot-every-bytes", str(8 * 1024)])
    assert Fanout(args).snapshot_every == 9  # 8 mutations of 1 KiB, then a snapshot
    assert Fanout(parse_args(["--target", "relay", "--port", "1"])).snapshot_every == 0
    mutation, offset = make_template(4096)
    snapshot, snapshot_offset = make_template(4096, SNAPSHOT_KIND)
    assert (len(snapshot), snapshot_offset) == (len(mutation), offset)
    assert read_stamp(bytes(snapshot))[0] == SNAPSHOT_KIND and read_stamp(bytes(mutation))[0] == MUTATION_KIND


def test_private_metrics_are_read_from_the_prometheus_text(monkeypatch):
    text = ("# HELP relay_copy_bytes Bytes\nrelay_copy_bytes_total 2048.0\nrelay_copy_writes_total 3.0\n"
            'relay_copy_fallbacks_total{reason="bytes"} 1.0\nrelay_copy_fallbacks_total{reason="time"} 2.0\n')

    class Response:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return text.encode()

    monkeypatch.setattr(failover_copy.urllib.request, "urlopen", lambda url, timeout: Response())
    assert failover_copy.copy_counters(1) == {"writes": 3.0, "bytes": 2048.0, "fallbacks": 3.0}
