"""The one place the load generator reaches below relay's public API (``relay._accel``).

It needs three things no public module offers, all pure functions of the fast path:

* ``encode_client_frame(opcode, payload, mask)``: a masked client frame with a key of its choice,
  so that the publisher can mask a large frame once and patch only the stamp (``MaskedStamp``);
* ``peek_envelope(data)``: where an envelope's body lies, without copying it (what
  ``relay.parse_delivered`` does, minus the sender and the ``Envelope`` object: cheaper for
  receivers that must keep up with a server at 1 KiB);
* the WebSocket opcodes.

Everything else goes through ``relay.Client`` and ``relay.ClientConnection``.
"""

from relay._accel import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, encode_client_frame, peek_envelope

__all__ = ["OP_BINARY", "OP_CLOSE", "OP_PING", "OP_PONG", "encode_client_frame", "peek_envelope"]
