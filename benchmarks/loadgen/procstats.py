"""The server process as Linux sees it: CPU time, resident memory; the descriptor limit."""

from __future__ import annotations

import os
import resource


def server_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (``/proc/PID/stat``), or None."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks
    except (OSError, IndexError, ValueError):
        return None


def _status_bytes(pid: int | None, field: str) -> int | None:
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024  # the kernel reports kB
    except OSError:
        return None
    return None


def server_peak_rss_bytes(pid: int | None) -> int | None:
    return _status_bytes(pid, "VmHWM:")


def server_rss_bytes(pid: int | None) -> int | None:
    return _status_bytes(pid, "VmRSS:")


def raise_fd_limit() -> int:
    """Up to the hard limit: 10,000 idle connections need more than the usual 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Server:
    """CPU and memory of the server process around a measurement."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.cpu_before = None

    def start(self) -> None:
        self.cpu_before = server_cpu_seconds(self.pid)

    def figures(self, messages: int, delivered_bytes: int) -> dict:
        cpu_after = server_cpu_seconds(self.pid)
        cpu = None if self.cpu_before is None or cpu_after is None else cpu_after - self.cpu_before
        return {
            "server_cpu_s": cpu,
            "server_cpu_s_per_message": None if cpu is None or not messages else cpu / messages,
            "server_cpu_s_per_mb": None if cpu is None or not delivered_bytes else cpu / (delivered_bytes / 1e6),
            "server_peak_rss_bytes": server_peak_rss_bytes(self.pid),
        }


def machine_cpu_seconds() -> dict | None:
    """CPU seconds of the whole machine so far, all cores summed (``/proc/stat``): ``busy`` (every
    process and the kernel) and ``steal`` (time the hypervisor gave our virtual CPUs to others)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return {"busy": (user + nice + system + irq + softirq) / ticks, "steal": steal / ticks}
