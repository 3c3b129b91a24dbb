"""A profiling hook for a benchmark's relay node: with ``PYTHONPATH=benchmarks/profile_hook`` and
``RELAY_SAMPLE_PROFILE=FILE`` the Python process that starts samples its own Python stack every
``SAMPLE_INTERVAL_S`` of CPU time (``ITIMER_PROF``: user + system time, so a sample taken as a
syscall returns lands on the Python frame that made it) and writes the stacks it saw, with their
counts, to FILE (JSON) at each SIGUSR1 and at exit.  A CPU-time sampler rather than cProfile: on
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

    SAMPLE_INTERVAL_S = 0.001
    MAX_DEPTH = 40
    _stacks = collections.Counter()

    def _sample(_signum, frame) -> None:
        names = []
        while frame is not None and len(names) < MAX_DEPTH:
            code = frame.f_code
            names.append(f"{os.path.basename(os.path.dirname(code.co_filename))}/{os.path.basename(code.co_filename)}:{code.co_name}")
            frame = frame.f_back
        _stacks[";".join(reversed(names))] += 1

    def _dump(*_args) -> None:
        with open(_path, "w") as f:
            json.dump({"interval_s": SAMPLE_INTERVAL_S, "stacks": dict(_stacks)}, f)

    signal.signal(signal.SIGPROF, _sample)
    signal.signal(signal.SIGUSR1, _dump)
    atexit.register(_dump)
    signal.setitimer(signal.ITIMER_PROF, SAMPLE_INTERVAL_S, SAMPLE_INTERVAL_S)
