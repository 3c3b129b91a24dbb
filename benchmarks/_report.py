"""Shared by every benchmark suite: interleaved timing, tables, the machine description, JSON.

Suites measure competing implementations *interleaved* (one sample of each in turn, several
rounds, median kept) so that a slow phase of the machine (another process, CPU frequency,
a noisy neighbour on the VM) hurts every candidate alike instead of whichever ran then.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
import timeit
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

RESULTS_DIR = Path(__file__).resolve().parent / "results"

KIB = 1024
MIB = 1024 * 1024


def measure_interleaved(
    candidates: Mapping[str, Callable[[], object]],
    *,
    rounds: int,
    min_sample_seconds: float,
) -> dict[str, dict]:
    """Median seconds per call of each candidate, sampled in turn for ``rounds`` rounds.

    Each sample repeats the call enough times to last at least ``min_sample_seconds``, so that
    timer resolution and loop overhead stay negligible.  The order rotates every round.
    """
    timers = {name: timeit.Timer(call) for name, call in candidates.items()}
    repeats = {name: _calls_per_sample(timer, min_sample_seconds) for name, timer in timers.items()}
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(timers[name].timeit(repeats[name]) / repeats[name])
    return {
        name: {"seconds": statistics.median(values), "samples": values,
               "calls_per_sample": repeats[name]}
        for name, values in samples.items()
    }


def _calls_per_sample(timer: timeit.Timer, min_sample_seconds: float) -> int:
    calls = 1
    while True:
        elapsed = timer.timeit(calls)  # the first pass doubles as a warm-up
        if elapsed >= min_sample_seconds:
            return calls
        calls = max(calls * 2, int(calls * min_sample_seconds / max(elapsed, 1e-9) * 1.2))


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def format_size(size: int) -> str:
    if size >= MIB and size % MIB == 0:
        return f"{size // MIB} MiB"
    if size >= KIB and size % KIB == 0:
        return f"{size // KIB} KiB"
    return f"{size} B"


def gigabytes_per_second(size: int, seconds: float) -> float:
    return size / seconds / 1e9


def print_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[object]],
                file=None) -> None:
    """A plain fixed-width table: first column left-aligned, the others right-aligned."""
    file = file or sys.stdout
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values):
        first, *rest = values
        return "  ".join([first.ljust(widths[0])] + [v.rjust(w) for v, w in zip(rest, widths[1:])])

    print(f"\n{title}", file=file)
    print(line(headers), file=file)
    print("  ".join("-" * w for w in widths), file=file)
    for row in cells:
        print(line(row), file=file)


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description(packages: Iterable[str] = ()) -> dict:
    """What the figures depend on: CPU, cores, OS, Python, relay's build, peers' versions."""
    try:
        usable_cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable_cores = os.cpu_count()
    relay_location = None
    try:
        import relay._accel as accel
        relay_implementation = accel.implementation()
        relay_location = os.path.dirname(accel.__file__)
        accel.print_shadowed_build_warning()  # a checkout shadowing the compiled install: say so loudly
    except Exception as exc:  # a benchmark of a broken tree must still say what it ran
        relay_implementation = f"relay._accel not importable: {exc!r}"
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores,
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "relay_active_implementation": relay_implementation,
        "relay_imported_from": relay_location,
        "relay_purepython_env": os.environ.get("RELAY_PUREPYTHON", ""),
        "packages": package_versions(["relay", *packages]),
    }


def save_json(suite: str, payload: Mapping, path: str | os.PathLike | None = None) -> Path:
    """Write the results; by default as benchmarks/results/<suite>-<UTC time>.json."""
    if path is None:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = RESULTS_DIR / f"{suite}-{stamp}.json"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "suite": suite,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **payload,
    }
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path
