"""A profiling hook for a benchmark's relay node: ``PYTHONPATH=benchmarks/profile_hook`` and
``RELAY_CPROFILE=FILE`` make the Python process that starts with them run under cProfile, and
write its statistics to FILE at each SIGUSR1 (and at exit).  ``python -m benchmarks failover_copy
--profile FILE`` sets both for the "copy on" node only; nothing in relay knows of it."""

import os

_path = os.environ.get("RELAY_CPROFILE")
if _path:
    import atexit
    import cProfile
    import signal

    _profiler = cProfile.Profile()

    def _dump(*_args) -> None:
        _profiler.disable()
        _profiler.dump_stats(_path)
        _profiler.enable()

    signal.signal(signal.SIGUSR1, _dump)
    atexit.register(_dump)
    _profiler.enable()
