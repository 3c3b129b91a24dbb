"""PNG plots of a fan-out run: throughput by message size, latency CDFs (needs matplotlib).

``plot_all`` is called by ``benchmarks/fanout.py`` at the end of a run; every figure carries the
machine's description, since the figures mean nothing without it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a benchmark machine
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks._report import format_size  # noqa: E402

COLORS = {"relay": "#d62728", "picows": "#1f77b4", "websockets": "#2ca02c", "aiohttp": "#9467bd",
          "trio-websocket": "#8c564b"}


def _machine_line(machine: dict) -> str:
    packages = ", ".join(f"{k} {v}" for k, v in machine.get("packages", {}).items() if v)
    return (f"{machine.get('cpu_model')} ({machine.get('usable_cores')} cores), {machine.get('platform')}, "
            f"{machine.get('python')}, relay {machine.get('relay_active_implementation')}\n{packages}")


def _good(result) -> bool:
    return bool(result) and "error" not in result


def throughput_by_size(summary, cases, servers, iperf3_bps, machine, path: Path) -> Path | None:
    fanouts = sorted({c.options["slaves"] for c in cases if c.workload == "fanout"})
    if not fanouts:
        return None
    fig, axes = plt.subplots(1, len(fanouts), figsize=(5.5 * len(fanouts), 4.8), squeeze=False)
    for ax, slaves in zip(axes[0], fanouts):
        keyed = sorted((c.options["size"], c.key) for c in cases if c.workload == "fanout" and c.options["slaves"] == slaves)
        for name in servers:
            points = [(size, summary[key][name]["delivered_bytes_per_s"] / 1e6) for size, key in keyed
                      if _good(summary[key].get(name))]
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name,
                        color=COLORS.get(name), linewidth=2.5 if name == "relay" else 1.5)
        if iperf3_bps:
            ax.axhline(iperf3_bps / 1e6, color="black", linestyle="--", linewidth=1, label="iperf3 1 stream")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks([size for size, _ in keyed])
        ax.set_xticklabels([format_size(size) for size, _ in keyed])
        ax.set_title(f"fan-out 1 -> {slaves}")
        ax.set_xlabel("message size")
        ax.set_ylabel("MB/s delivered to all slaves (median of rounds)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Throughput by message size (same run, servers interleaved)")
    fig.text(0.01, 0.01, _machine_line(machine), fontsize=7, va="bottom")
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency_cdf(summary, cases, servers, machine, path: Path) -> Path | None:
    panels = []  # (title, key, quantiles field)
    for c in cases:
        if c.workload == "fanout" and c.options["slaves"] == 4:
            panels.append((f"fan-out 1 -> 4, {format_size(c.options['size'])} (saturated)", c.key, "latency_quantiles"))
    if "mixed" in summary:
        panels.append(("mixed trace: small messages, all", "mixed", "small_latency_quantiles"))
        panels.append(("mixed trace: small messages, 5 MiB snapshot in flight", "mixed",
                       "small_in_flight_largest_latency_quantiles"))
    if "return" in summary:
        panels.append(("return path 4 -> 1", "return", "latency_quantiles"))
    if not panels:
        return None
    columns = min(3, len(panels))
    rows = (len(panels) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 4.2 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    from benchmarks.loadgen import CDF_QUANTILES
    for ax, (title, key, field) in zip(axes.flat, panels):
        for name in servers:
            result = summary.get(key, {}).get(name)
            if not _good(result) or not result.get(field):
                continue
            values = [v * 1e3 for v in result[field]]
            ax.plot(values, CDF_QUANTILES[:len(values)], label=name, color=COLORS.get(name),
                    linewidth=2.5 if name == "relay" else 1.5, drawstyle="steps-post")
        ax.set_xscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("latency, ms (send -> last receiver)")
        ax.set_ylabel("fraction of messages")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Latency CDF (median round of each server)")
    fig.text(0.01, 0.005, _machine_line(machine), fontsize=7, va="bottom")
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def sweep(summary, cases, servers, iperf3_bps, machine, path: Path) -> Path | None:
    """The 1 -> 4 sweep: MB/s delivered and server CPU per delivered message, by size."""
    keyed = sorted((c.options["size"], c.key, c.options["slaves"]) for c in cases if c.workload == "sweep")
    if not keyed:
        return None
    fig, (rate, cpu) = plt.subplots(1, 2, figsize=(12, 4.8))
    for name in servers:
        points = [(size, summary[key][name], slaves) for size, key, slaves in keyed if _good(summary[key].get(name))]
        if not points:
            continue
        style = dict(marker="o", label=name, color=COLORS.get(name), linewidth=2.5 if name == "relay" else 1.5)
        rate.plot([p[0] for p in points], [p[1]["delivered_bytes_per_s"] / 1e6 for p in points], **style)
        cpu_points = [(p[0], p[1]["server_cpu_s_per_message"] / p[2] * 1e6) for p in points
                      if p[1].get("server_cpu_s_per_message")]
        cpu.plot([p[0] for p in cpu_points], [p[1] for p in cpu_points], **style)
    if iperf3_bps:
        rate.axhline(iperf3_bps / 1e6, color="black", linestyle="--", linewidth=1, label="iperf3 1 stream")
    for ax, title, label in ((rate, "MB/s delivered to 4 slaves (median round)", "MB/s"),
                             (cpu, "server CPU per delivered message", "CPU us per message per slave")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks([size for size, _key, _s in keyed][::2])
        ax.set_xticklabels([format_size(size) for size, _key, _s in keyed][::2], fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("message size")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Fan-out 1 -> 4 sweep, 1 KiB to 16 MiB (same run, servers interleaved)")
    fig.text(0.01, 0.01, _machine_line(machine), fontsize=7, va="bottom")
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_all(summary, cases, servers, iperf3_bps, machine, stem: Path) -> list:
    stem = Path(stem)
    made = [throughput_by_size(summary, cases, servers, iperf3_bps, machine, Path(f"{stem}-throughput.png")),
            latency_cdf(summary, cases, servers, machine, Path(f"{stem}-latency-cdf.png")),
            sweep(summary, cases, servers, iperf3_bps, machine, Path(f"{stem}-sweep.png"))]
    return [p for p in made if p is not None]
