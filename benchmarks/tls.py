"""``python -m benchmarks tls``: fan-out 1 -> 4 over TLS (WSS), relay against picows over TLS and against
relay's own plaintext, in one run.

    python -m benchmarks tls             # 1 KiB, 64 KiB and 1 MiB, 5 rounds: about 3 minutes on a 2-core VM
    python -m benchmarks tls --quick     # shorter samples, the same rounds: about 2 minutes

Servers and the load generator are those of ``benchmarks fanout`` (its own process each, pinned to core 0
and core 1): ``relay serve --tls-cert-file ...`` (relay/_tls.py: ssl.SSLObject over MemoryBIO, each frame
built once and encrypted per slave), picows on uvloop with asyncio's TLS (``ssl=`` of create_server), and
relay in plaintext.  All speak TLS 1.2+ with the stdlib's defaults (TLS 1.3, AES-GCM or ChaCha20 as
OpenSSL picks); the certificate comes from a throwaway CA made with ``openssl`` in a temporary folder,
and the load generator (``--tls-ca``) verifies it.  For each size the three take turns within every round
(the order rotating); figures are medians over rounds and ratios are taken round by round, with their
spread (benchmarks/_stats.py).  Server CPU per delivered message = the server's CPU time over the
sample / (messages x 4 slaves).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import fanout
from benchmarks._report import KIB, MIB, format_size, machine_description, print_table, save_json
from benchmarks._stats import MIN_RATIO_ROUNDS, format_ratio, paired_ratios, ratio_stats

SLAVES = 4
SIZES = [KIB, 64 * KIB, MIB]
COUNT_CAP = {KIB: 60_000, 64 * KIB: 10_000, MIB: 1_000}  # a cap: a sample stops on time first
# name -> (server of benchmarks/fanout.py, over TLS)
CANDIDATES = {"relay-tls": ("relay", True), "picows-tls": ("picows", True), "relay": ("relay", False)}
SECONDS = {"full": 1.0, "quick": 0.4}
OPENSSL_TIMEOUT_S = 30


def make_certificate(directory: Path) -> dict:
    """A throwaway CA and a certificate for 127.0.0.1 signed by it (openssl): {ca, cert, key}."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=OPENSSL_TIMEOUT_S)

    files = {"ca": str(directory / "ca.crt"), "cert": str(directory / "server.crt"), "key": str(directory / "server.key")}
    curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    run("req", "-x509", *curve, "-keyout", str(directory / "ca.key"), "-out", files["ca"], "-days", "1",
        "-subj", "/CN=relay benchmark CA", "-addext", "basicConstraints=critical,CA:TRUE")
    run("req", *curve, "-keyout", files["key"], "-out", str(directory / "server.csr"), "-subj", "/CN=127.0.0.1")
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", str(directory / "server.csr"), "-CA", files["ca"], "-CAkey", str(directory / "ca.key"),
        "-CAcreateserial", "-out", files["cert"], "-days", "1", "-extfile", str(directory / "server.ext"))
    return files


def start_server(name: str, files: dict) -> tuple:
    base, tls = CANDIDATES[name]
    args, mode = fanout.SERVERS[base]
    port = fanout.free_port()
    if base == "relay":
        command = [sys.executable, "-I", *args, "--listen", f"127.0.0.1:{port}",
                   "--private-listen", f"127.0.0.1:{fanout.free_port()}"]
        if tls:
            command += ["--tls-cert-file", files["cert"], "--tls-key-file", files["key"]]
    else:
        command = [sys.executable, *args, "--port", str(port)]
        if tls:
            command += ["--tls-cert", files["cert"], "--tls-key", files["key"]]
    process = subprocess.Popen(command, cwd=fanout.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=fanout._child_setup(fanout.SERVER_CORE), env=fanout._env())
    line = process.stdout.readline()  # relay prints its address, picows READY: both mean listening
    if not line:
        process.kill()
        raise RuntimeError(f"{name} did not start: {process.stderr.read()[-2000:]}")
    if base == "relay":
        fanout.RELAY_IMPLEMENTATIONS.add(line.split(" (", 1)[-1].rsplit("): node ", 1)[0])
    return process, port, mode


def one_sample(name: str, size: int, seconds: float, files: dict) -> dict:
    process, port, mode = start_server(name, files)
    try:
        command = [sys.executable, "-m", "benchmarks.loadgen", "--workload", "fanout", "--target", mode,
                   "--port", str(port), "--server-pid", str(process.pid), "--slaves", str(SLAVES),
                   "--size", str(size), "--count", str(COUNT_CAP[size]), "--max-duration-s", str(seconds)]
        if CANDIDATES[name][1]:
            command += ["--tls-ca", files["ca"]]
        done = subprocess.run(command, cwd=fanout.ROOT, capture_output=True, text=True, timeout=fanout.RUN_TIMEOUT_S,
                              preexec_fn=fanout._child_setup(fanout.LOADGEN_CORE), env=fanout._env())
        if done.returncode != 0:
            raise RuntimeError(f"load generator failed against {name}: {done.stderr.strip()[-1500:]}")
        sample = json.loads(done.stdout)
    finally:
        fanout.stop_server(process)
    cpu = sample.get("server_cpu_s")
    sample["server_cpu_s_per_delivered_message"] = cpu / (sample["count"] * SLAVES) if cpu else None
    return sample


def run(rounds: int, seconds: float, files: dict) -> dict:
    """{size: {name: [sample per round]}}, the candidates taking turns within each round."""
    names = list(CANDIDATES)
    samples = {size: {name: [] for name in names} for size in SIZES}
    for round_index in range(rounds):
        for size in SIZES:
            order = names[round_index % len(names):] + names[:round_index % len(names)]
            for name in order:
                started = time.monotonic()
                try:
                    sample = one_sample(name, size, seconds, files)
                except RuntimeError as exc:
                    print(f"  {name} {format_size(size)}: {exc}", file=sys.stderr)
                    sample = None
                samples[size][name].append(sample)
                shown = f"{sample['messages_per_s']:.0f} msg/s" if sample else "failed"
                print(f"  round {round_index + 1}/{rounds}  {format_size(size):>7}  {name:<10}  {shown}  "
                      f"({time.monotonic() - started:.1f} s)", flush=True)
    return samples


def _figure(runs: list, key: str) -> list:
    return [run.get(key) if run else None for run in runs]


def _median(values: list):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(samples: dict) -> dict:
    summary = {}
    for size, by_name in samples.items():
        entry = {}
        for name, runs in by_name.items():
            entry[name] = {key: _median(_figure(runs, key)) for key in (
                "messages_per_s", "delivered_bytes_per_s", "server_cpu_s_per_delivered_message", "latency_p50_s",
                "latency_p99_s", "loadgen_cpu_share")}
        msgs = {name: _figure(runs, "messages_per_s") for name, runs in by_name.items()}
        cpu = {name: _figure(runs, "server_cpu_s_per_delivered_message") for name, runs in by_name.items()}
        entry["ratios"] = {
            "relay_tls_over_picows_tls_msgs": ratio_stats(paired_ratios(msgs["relay-tls"], msgs["picows-tls"])),
            "relay_tls_over_relay_plain_msgs": ratio_stats(paired_ratios(msgs["relay-tls"], msgs["relay"])),
            # how many times less CPU per delivered message relay-tls needs (above 1: relay-tls uses less)
            "cpu_picows_tls_over_relay_tls": ratio_stats(paired_ratios(cpu["relay-tls"], cpu["picows-tls"],
                                                                       higher_is_better=False)),
            "cpu_relay_plain_over_relay_tls": ratio_stats(paired_ratios(cpu["relay-tls"], cpu["relay"],
                                                                        higher_is_better=False)),
        }
        summary[size] = entry
    return summary


def _num(value, scale=1.0, digits=0) -> str:
    return "-" if value is None else f"{value * scale:,.{digits}f}"


def report(summary: dict) -> None:
    rows = []
    for size, entry in summary.items():
        for name in CANDIDATES:
            figures = entry[name]
            rows.append([format_size(size), name, _num(figures["messages_per_s"]),
                         _num(figures["delivered_bytes_per_s"], 1e-6, 1),
                         _num(figures["server_cpu_s_per_delivered_message"], 1e6, 2),
                         _num(figures["latency_p50_s"], 1e3, 2), _num(figures["latency_p99_s"], 1e3, 2),
                         _num(figures["loadgen_cpu_share"], 100)])
    print_table(f"Fan-out 1 -> {SLAVES}: medians over rounds (msg/s sent by the master; MB/s delivered to all "
                "slaves; server cpu us per delivered message)",
                ["size", "server", "msg/s", "MB/s", "cpu us/msg", "p50 ms", "p99 ms", "loadgen %"], rows)
    ratio_rows = []
    for size, entry in summary.items():
        ratios = entry["ratios"]
        ratio_rows.append([format_size(size), format_ratio(ratios["relay_tls_over_picows_tls_msgs"]),
                           format_ratio(ratios["cpu_picows_tls_over_relay_tls"]),
                           format_ratio(ratios["relay_tls_over_relay_plain_msgs"]),
                           format_ratio(ratios["cpu_relay_plain_over_relay_tls"])])
    print_table("Ratios, round by round: median (min..max). msg/s: above 1 relay-tls is faster; cpu: above 1 "
                "relay-tls spends less CPU per delivered message",
                ["size", "relay-tls/picows-tls msg/s", "cpu picows-tls/relay-tls", "relay-tls/relay msg/s",
                 "cpu relay/relay-tls"], ratio_rows)


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks tls", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{SECONDS['quick']} s samples instead of "
                                                             f"{SECONDS['full']} s")
    parser.add_argument("--rounds", type=int, default=MIN_RATIO_ROUNDS,
                        help=f"interleaved rounds (at least {MIN_RATIO_ROUNDS}, for ratios with a spread)")
    parser.add_argument("--json", metavar="FILE", help="where to save the results (default: benchmarks/results/)")
    options = parser.parse_args(argv)
    rounds = max(options.rounds, MIN_RATIO_ROUNDS)
    seconds = SECONDS["quick" if options.quick else "full"]
    with tempfile.TemporaryDirectory(prefix="relay-bench-tls-") as directory:
        files = make_certificate(Path(directory))
        print(f"TLS fan-out 1 -> {SLAVES}: {', '.join(format_size(s) for s in SIZES)}; {', '.join(CANDIDATES)}; "
              f"{rounds} rounds of {seconds} s samples", flush=True)
        samples = run(rounds, seconds, files)
    summary = summarize(samples)
    report(summary)
    machine = machine_description(["picows", "uvloop"])
    machine["relay_server_implementation"] = sorted(fanout.RELAY_IMPLEMENTATIONS)
    import ssl

    machine["openssl"] = ssl.OPENSSL_VERSION
    path = save_json("tls", {"machine": machine, "slaves": SLAVES, "rounds": rounds, "sample_seconds": seconds,
                             "summary": {str(size): entry for size, entry in summary.items()},
                             "samples": {str(size): by_name for size, by_name in samples.items()}},
                     options.json)
    print(f"\nrelay servers ran: {', '.join(sorted(fanout.RELAY_IMPLEMENTATIONS))}; {ssl.OPENSSL_VERSION}")
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
