"""Run every fuzz harness for a bounded time, one after the other; report executions per second.

    python fuzz/run.py [--seconds-per-target 20] [--work-dir DIR] [--targets frames,envelope,...]
                       [--seeds-only]

Each target gets a seed corpus written from tests/corpus/*.py (``DIR/<target>/seeds``), a working
corpus that grows across runs (``DIR/<target>/corpus``) and crash artifacts
(``DIR/<target>/crash-*``, replay with ``python fuzz/fuzz_<target>.py CRASH_FILE``).
Exit status 1 if any target found something (or did not run), else 0.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TARGETS = ("frames", "envelope", "cookie", "http")
MAX_INPUT_BYTES = {"frames": 8192, "envelope": 8192, "cookie": 4096, "http": 8192}
RSS_LIMIT_MB = 1024  # a harness past this is a finding (an input that makes a twin allocate wildly)
SLOW_INPUT_S = 10  # libFuzzer -timeout: one input running this long is a finding (a hang)


def _import_like_the_harnesses() -> None:
    """sys.path as a harness has it: fuzz/ first, the checkout last (see fuzz/_common.py)."""
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    if REPO not in sys.path:
        sys.path.append(REPO)


def write_seeds(target: str, seed_dir: str) -> int:
    _import_like_the_harnesses()
    module = __import__(f"fuzz_{target}")
    os.makedirs(seed_dir, exist_ok=True)
    count = 0
    for seed in module.seeds():
        if len(seed) > MAX_INPUT_BYTES[target]:
            continue
        path = os.path.join(seed_dir, hashlib.sha1(seed).hexdigest())
        with open(path, "wb") as out:
            out.write(seed)
        count += 1
    return count


def run_target(target: str, seconds: int, work_dir: str, python: str) -> dict:
    base = os.path.join(work_dir, target)
    seed_dir, corpus_dir = os.path.join(base, "seeds"), os.path.join(base, "corpus")
    os.makedirs(corpus_dir, exist_ok=True)
    seeds = write_seeds(target, seed_dir)
    command = [
        python, os.path.join(HERE, f"fuzz_{target}.py"), corpus_dir, seed_dir,
        f"-max_total_time={seconds}", f"-max_len={MAX_INPUT_BYTES[target]}",
        f"-timeout={SLOW_INPUT_S}", f"-rss_limit_mb={RSS_LIMIT_MB}",
        f"-artifact_prefix={base}{os.sep}", "-print_final_stats=1", "-print_pcs=0",
    ]
    started = time.monotonic()
    process = subprocess.run(command, cwd=REPO, capture_output=True, text=True, errors="replace")
    elapsed = time.monotonic() - started
    log = process.stdout + process.stderr
    with open(os.path.join(base, "last-run.log"), "w") as out:
        out.write(log)
    executions = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
    executions = int(executions.group(1)) if executions else 0
    crashes = re.findall(r"Test unit written to (\S+)", log)
    return dict(target=target, rc=process.returncode, seconds=elapsed, executions=executions,
                per_second=executions / max(elapsed, 1e-9), seeds=seeds, crashes=crashes, log=log)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds-per-target", type=int, default=20)
    parser.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "relay-fuzz"))
    parser.add_argument("--targets", default=",".join(TARGETS))
    args = parser.parse_args()
    _import_like_the_harnesses()
    import relay._accel as accel  # the relay the harnesses fuzz

    accel.print_shadowed_build_warning()
    fuzzed = f"relay from {os.path.dirname(accel.__file__)}: {accel.implementation()}"
    print(f"fuzzing {fuzzed}", flush=True)
    results = []
    for target in args.targets.split(","):
        result = run_target(target, args.seconds_per_target, args.work_dir, sys.executable)
        results.append(result)
        status = "ok" if result["rc"] == 0 else f"FOUND SOMETHING (exit {result['rc']})"
        print(f"fuzz {target:9s} {result['executions']:8d} runs in {result['seconds']:5.1f} s "
              f"({result['per_second']:7.0f}/s), {result['seeds']} seeds: {status}", flush=True)
        if result["rc"] != 0:
            tail = "\n".join(result["log"].splitlines()[-40:])
            print(tail)
            for crash in result["crashes"]:
                print(f"  replay: {sys.executable} fuzz/fuzz_{target}.py {crash}")
    print(f"fuzzed {fuzzed}", flush=True)
    return 0 if all(result["rc"] == 0 for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
