"""The fast-path suite: relay's two twins against the libraries the issue names as peers.

    python -m benchmarks fastpath [--quick] [--system-malloc] [--json PATH]

Both twins (``relay._fastpath`` and ``relay._purepath``, imported directly, whatever
RELAY_PUREPYTHON says) and the peers run in the same process.  The measurements are those of the
twin authors' modules, which this suite runs, judges and records:

- benchmarks/bench_frames.py ``run(sizes)``: frame decoding, unmasking, encoding.  It times each
  figure on its own, so its whole run is repeated and the median kept (twins and peers then
  alternate at the scale of a run).
- benchmarks/bench_primitives.py ``run(quick)``: cookies, tokens, envelopes, interleaved inside.

Targets are reported PASS/MISS, never asserted: they are goals for this machine, not tests.
benchmarks/README.md explains every figure.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import statistics
import sys
from dataclasses import asdict, dataclass, field

from benchmarks._report import (
    KIB,
    MIB,
    format_seconds,
    format_size,
    gigabytes_per_second,
    machine_description,
    print_table,
    save_json,
)

SIZES = (1 * KIB, 50 * KIB, 1 * MIB, 5 * MIB)
#: The message size at which the issue states the frame targets.
TARGET_SIZE = 1 * MIB
#: Whole runs of bench_frames.run (about a minute each here): it times each figure on its own.
FRAMES_RUNS = {"full": 3, "quick": 1}
FRAMES_MODULE = "benchmarks.bench_frames"
PRIMITIVES_MODULE = "benchmarks.bench_primitives"

# Group and implementation names as the twin authors' modules give them (or may, once renamed).
DECODE_GROUPS = ("decode masked message", "decode masked (1 frame per feed)")
UNMASK_GROUPS = ("unmask",)
ENCODE_GROUPS = ("encode frame", "encode_frame")
MEMCPY_IMPLS = ("header + payload", "memcpy (bytes(bytearray))")
EXTERNAL_IMPL_LABELS = {"relay-cython": "relay Cython", "relay-pure": "relay pure"}

TWIN_LABELS = {"relay._fastpath": "relay Cython", "relay._purepath": "relay pure"}
PEER_PACKAGES = ["wsproto", "websockets", "cassandra-driver", "Cython", "msgpack"]

# Targets of the issue (the Cython twin; the pure twin is reported, not judged).
DECODE_SPEEDUP_OVER_WSPROTO = 10.0
UNMASK_MIN_GBPS = 5.0
#: "memcpy speed": encode_frame may take at most this multiple of header + payload concatenation.
ENCODE_MAX_RATIO_TO_CONCAT = 1.2
COOKIE_SPEEDUP_OVER_SIMPLECOOKIE = 10.0
ADVERSARIAL_COOKIE_MAX_SECONDS = 1e-3


@dataclass
class Row:
    """One measured figure.  ``role`` is "relay" for a twin, "peer" for a reference."""

    group: str
    case: str
    impl: str
    role: str
    seconds: float
    size: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def gbps(self) -> float | None:
        return gigabytes_per_second(self.size, self.seconds) if self.size else None


def _load_twins() -> tuple[dict[str, object], dict[str, str]]:
    twins, missing = {}, {}
    for module_name, label in TWIN_LABELS.items():
        try:
            twins[label] = importlib.import_module(module_name)
        except ImportError as exc:  # e.g. the extension is not built: measure what exists
            missing[label] = str(exc)
    return twins, missing


# ---- targets ------------------------------------------------------------------------------------

def _seconds(rows, groups, case, impls) -> float | None:
    groups = (groups,) if isinstance(groups, str) else groups
    impls = (impls,) if isinstance(impls, str) else impls
    for row in rows:
        if row.group in groups and row.case == case and row.impl in impls:
            return row.seconds
    return None


def _target(text: str, measured: str, ok: bool | None) -> dict:
    return {"target": text, "measured": measured,
            "status": "N/A" if ok is None else ("PASS" if ok else "MISS")}


def evaluate_targets(rows: list[Row]) -> list[dict]:
    fast = TWIN_LABELS["relay._fastpath"]
    at = format_size(TARGET_SIZE)
    targets = []

    decode = _seconds(rows, DECODE_GROUPS, at, fast)
    wsproto = _seconds(rows, DECODE_GROUPS, at, "wsproto")
    websockets = _seconds(rows, DECODE_GROUPS, at, "websockets")
    if None in (decode, wsproto, websockets):
        targets.append(_target(f"decode {at}: >= 10x wsproto, <= websockets", "not measured", None))
    else:
        speedup = wsproto / decode
        targets.append(_target(
            f"decode masked {at}: >= {DECODE_SPEEDUP_OVER_WSPROTO:g}x faster than wsproto",
            f"{speedup:.1f}x ({format_seconds(decode)} vs {format_seconds(wsproto)})",
            speedup >= DECODE_SPEEDUP_OVER_WSPROTO))
        targets.append(_target(
            f"decode masked {at}: no slower than websockets",
            f"relay/websockets = {decode / websockets:.2f} ({format_seconds(websockets)})",
            decode <= websockets))

    unmask = _seconds(rows, UNMASK_GROUPS, at, fast)
    gbps = gigabytes_per_second(TARGET_SIZE, unmask) if unmask else None
    targets.append(_target(f"unmask {at}: >= {UNMASK_MIN_GBPS:g} GB/s",
                           "not measured" if gbps is None else f"{gbps:.1f} GB/s",
                           None if gbps is None else gbps >= UNMASK_MIN_GBPS))

    encode = _seconds(rows, ENCODE_GROUPS, at, fast)
    concat = _seconds(rows, ENCODE_GROUPS, at, MEMCPY_IMPLS)
    ratio = encode / concat if encode and concat else None
    targets.append(_target(
        f"encode frame {at}: memcpy speed (<= {ENCODE_MAX_RATIO_TO_CONCAT:g}x a copy of it)",
        "not measured" if ratio is None else f"{ratio:.2f}x ({format_seconds(encode)})",
        None if ratio is None else ratio <= ENCODE_MAX_RATIO_TO_CONCAT))

    cookie_rows = [r for r in rows if r.group == "cookie lookup"]
    relay_cookie = next((r.seconds for r in cookie_rows if r.impl == fast), None)
    simple = next((r.seconds for r in cookie_rows if r.impl == "SimpleCookie"), None)
    speedup = simple / relay_cookie if relay_cookie and simple else None
    targets.append(_target(
        f"cookie lookup: >= {COOKIE_SPEEDUP_OVER_SIMPLECOOKIE:g}x faster than SimpleCookie",
        "not measured" if speedup is None else f"{speedup:.1f}x ({format_seconds(relay_cookie)})",
        None if speedup is None else speedup >= COOKIE_SPEEDUP_OVER_SIMPLECOOKIE))

    adversarial = [r for r in rows if r.group.startswith("adversarial cookie") and r.impl == fast]
    worst = max(adversarial, key=lambda r: r.seconds, default=None)
    targets.append(_target(
        f"adversarial 16 KiB cookie header: < {format_seconds(ADVERSARIAL_COOKIE_MAX_SECONDS)}",
        "not measured" if worst is None else f"worst {format_seconds(worst.seconds)} ({worst.case})",
        None if worst is None else worst.seconds < ADVERSARIAL_COOKIE_MAX_SECONDS))

    token_cases = sorted({r.case for r in rows if r.group == "murmur3 token"})
    ratios = {}
    for case in token_cases:
        mine = _seconds(rows, "murmur3 token", case, fast)
        driver = _seconds(rows, "murmur3 token", case, "cassandra-driver")
        if mine and driver:
            ratios[case] = mine / driver
    targets.append(_target(
        "murmur3 token: at least as fast as cassandra-driver's C extension (every key size)",
        ", ".join(f"{case}: {r:.2f}" for case, r in ratios.items()) or "not measured",
        None if not ratios else all(r <= 1.0 for r in ratios.values())))
    return targets


# ---- external rows, output ----------------------------------------------------------------------

def _module_exists(module_name: str) -> bool:
    return importlib.util.find_spec(module_name) is not None


def _row_from_external(produced: dict) -> Row:
    """A ``Row`` from bench_primitives.py's dicts (Row's fields) or bench_frames.py's
    (name, impl, size, seconds, gbps)."""
    if "group" in produced:
        return Row(**produced)
    group, impl = produced["name"], EXTERNAL_IMPL_LABELS.get(produced["impl"], produced["impl"])
    if group.startswith("memcpy"):  # the reference of encode_frame: show them side by side
        group, impl = ENCODE_GROUPS[1], produced["name"]
    size = produced.get("size")
    role = "relay" if impl in TWIN_LABELS.values() else "peer"
    return Row(group, format_size(size) if size else produced.get("case", ""), impl, role,
               produced["seconds"], size)


def repeated_external_rows(module_name: str, rounds: int, *args) -> list[Row]:
    """Median over ``rounds`` whole runs of a module's ``run(*args)``.

    The module times each figure on its own; repeating whole runs puts its twins and peers in
    alternation at the scale of a run, so a slow minute of the machine does not pick a winner.
    """
    run = importlib.import_module(module_name).run
    by_key: dict[tuple, list[Row]] = {}
    for _ in range(rounds):
        for row in map(_row_from_external, run(*args)):
            by_key.setdefault((row.group, row.case, row.impl), []).append(row)
    rows = []
    for same in by_key.values():
        median = statistics.median(r.seconds for r in same)
        rows.append(Row(**{**asdict(same[0]), "seconds": median,
                           "extra": {"source": module_name, "runs": len(same)}}))
    return rows


def print_rows(rows: list[Row]) -> None:
    groups = list(dict.fromkeys(r.group for r in rows))
    for group in groups:
        in_group = [r for r in rows if r.group == group]
        peers = list(dict.fromkeys(r.impl for r in in_group if r.role == "peer"))
        table = []
        for case in dict.fromkeys(r.case for r in in_group):
            by_impl = {r.impl: r for r in in_group if r.case == case}
            for row in by_impl.values():
                ratios = [f"{row.seconds / by_impl[p].seconds:.3g}"
                          if row.role == "relay" and p in by_impl else "" for p in peers]
                gbps = f"{row.gbps:.2f}" if row.gbps is not None else "-"
                table.append([case, row.impl, format_seconds(row.seconds), gbps, *ratios])
        print_table(group, ["case", "implementation", "median", "GB/s",
                            *[f"relay/{p}" for p in peers]], table)


def print_targets(targets: list[dict]) -> None:
    print_table("Targets (Cython twin, this machine)", ["target", "measured", "status"],
                [[t["target"], t["measured"], t["status"]] for t in targets])


#: glibc tunables that keep freed large blocks in the heap.  Without them every 1 MiB buffer a
#: library allocates is a fresh mmap, and its page faults (2 ms per 1 MiB message for websockets'
#: parser on this kind of VM, against 0.1 ms with them) measure the kernel, not the library.
STEADY_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(64 * MIB), "MALLOC_TRIM_THRESHOLD_": str(256 * MIB)}


def _restart_with_steady_malloc(argv: list[str]) -> None:
    if sys.platform.startswith("linux") and any(k not in os.environ for k in STEADY_MALLOC):
        os.execve(sys.executable, [sys.executable, "-m", "benchmarks", "fastpath", *argv],
                  {**os.environ, **STEADY_MALLOC})


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks fastpath", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="fewer rounds and shorter samples (about a third of the time)")
    parser.add_argument("--json", metavar="PATH",
                        help="where to save the results (default: benchmarks/results/fastpath-*.json)")
    parser.add_argument("--system-malloc", action="store_true",
                        help="keep glibc's default allocator settings (see STEADY_MALLOC)")
    args = parser.parse_args(argv)
    if not args.system_malloc:
        _restart_with_steady_malloc(argv)

    twins, missing = _load_twins()
    for label, why in missing.items():
        print(f"note: {label} not measured: {why}")

    machine = machine_description(PEER_PACKAGES)
    frames_runs = FRAMES_RUNS["quick" if args.quick else "full"]
    print(f"{machine['cpu_model']}, {machine['usable_cores']} cores, {machine['python']}; "
          f"relay from {machine['relay_imported_from']}: {machine['relay_active_implementation']}")

    rows: list[Row] = []
    missing_modules = [m for m in (FRAMES_MODULE, PRIMITIVES_MODULE) if not _module_exists(m)]
    for module_name in missing_modules:
        print(f"note: {module_name} does not exist: its figures are not measured")
    if FRAMES_MODULE not in missing_modules:
        print(f"frames: median of {frames_runs} whole run(s) of {FRAMES_MODULE}")
        rows += repeated_external_rows(FRAMES_MODULE, frames_runs, list(SIZES))
    if PRIMITIVES_MODULE not in missing_modules:
        print(f"primitives: {PRIMITIVES_MODULE} (interleaved inside)")
        produced = importlib.import_module(PRIMITIVES_MODULE).run(quick=args.quick)
        rows += [_row_from_external(row) for row in produced]

    print_rows(rows)
    targets = evaluate_targets(rows)
    print_targets(targets)
    path = save_json("fastpath", {
        "machine": machine,
        "settings": {"quick": args.quick, "sizes": list(SIZES), "frames_runs": frames_runs,
                     "malloc_env": {k: os.environ.get(k) for k in STEADY_MALLOC}},
        "twins_measured": sorted(twins), "twins_missing": missing,
        "results": [dict(asdict(r), gbps=r.gbps) for r in rows],
        "targets": targets,
    }, args.json)
    print(f"\nsaved {path}")
    return 0
