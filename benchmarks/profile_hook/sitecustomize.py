"""A profiling hook for a benchmark's relay node: with ``PYTHONPATH=benchmarks/profile_hook`` and
``RELAY_SAMPLE_PROFILE=FILE`` the Python process that starts samples its own Python stack every
``SAMPLE_INTERVAL_S`` of CPU time (``ITIMER_PROF``: user + system time, so a sample taken as a
syscall returns lands on the Python frame that made it) and writes the stacks it saw, with the CPU
seconds each was charged, to FILE (JSON) at each SIGUSR1 and at exit; SIGUSR2 starts afresh
(after a warm-up, so that start-up and first imports are left out).  Each sample is charged the
process's CPU time since the previous one (``time.process_time``): timer signals that fire during
one long C call (a large ``sendmsg``) reach Python as one, and a plain count would undercount it.  A CPU-time sampler rather than cProfile: on
this machine cProfile's CPU timers cost microseconds per call, and its wall-clock timer also counts
the time the node was preempted inside a call (by redis-server woken on its core, say).
``python -m benchmarks failover_copy --profile DIR`` sets it for both nodes; nothing in relay knows
of it."""

import os

_path = os.environ.get("RELAY_SAMPLE_PROFILE")
if _path:
    import atexit
    import collections
    import json
    import signal
    import time

    SAMPLE_INTERVAL_S = 0.001
    MAX_DEPTH = 60  # innermost frames kept: a trio task's stack is short
    _stacks = collections.Counter()
    _last = [time.process_time()]

    def _where(filename: str) -> str:
        """A package's file as ``package/.../file.py`` (site-packages), relay's as ``relay/file.py``."""
        if "site-packages/" in filename:
            return filename.rsplit("site-packages/", 1)[1]
        if "/relay/" in filename:
            return "relay/" + filename.rsplit("/relay/", 1)[1]
        return os.path.basename(filename)

    def _sample(_signum, frame) -> None:
        now = time.process_time()
        charged, _last[0] = now - _last[0], now
        names = []
        while frame is not None and len(names) < MAX_DEPTH:
            code = frame.f_code
            names.append(f"{_where(code.co_filename)}:{code.co_name}")
            frame = frame.f_back
        _stacks[";".join(reversed(names))] += charged

    def _dump(*_args) -> None:
        with open(_path, "w") as f:
            json.dump({"interval_s": SAMPLE_INTERVAL_S, "unit": "cpu_s", "stacks": dict(_stacks)}, f)

    signal.signal(signal.SIGPROF, _sample)
    def _reset(*_args) -> None:
        _stacks.clear()
        _last[0] = time.process_time()

    signal.signal(signal.SIGUSR1, _dump)
    signal.signal(signal.SIGUSR2, _reset)
    atexit.register(_dump)
    signal.setitimer(signal.ITIMER_PROF, SAMPLE_INTERVAL_S, SAMPLE_INTERVAL_S)
