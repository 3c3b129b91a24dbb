"""Broadcast servers for the fan-out benchmarks: one per peer, all with the same behaviour.

Each runs as ``python -m benchmarks.servers.NAME --port P``, prints ``READY`` when it listens, and
sends every binary message received on ``/pub`` to every connection open on ``/sub``, and every
binary message received on ``/sub`` to the latest ``/pub`` connection (the return path).  relay itself
is run through its real CLI and endpoints instead (a session, a master, slaves).
picows also serves ``/pub/NAME`` and ``/sub/NAME``: the same within channel ``NAME`` only (one session
of the capacity benchmark per channel).
"""
