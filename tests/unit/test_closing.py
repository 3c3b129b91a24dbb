"""The WebSocket closing handshake state machine (relay._closing), without sockets.

Every event is tried in every state (the table below), then the rules that the table cannot show:
which code goes out, how many queued messages still may, what is refused and why.
"""

from __future__ import annotations

import pytest

from relay._closecodes import CloseCode
from relay._closing import MAX_CLOSE_REASON_BYTES, ClosingHandshake, ConnectionState, clip_close_reason
from relay._errors import LocalProtocolError

OPEN = ConnectionState.OPEN
LOCAL_CLOSING = ConnectionState.LOCAL_CLOSING
REMOTE_CLOSING = ConnectionState.REMOTE_CLOSING
CLOSE_SENT = ConnectionState.CLOSE_SENT
CLOSED = ConnectionState.CLOSED
REFUSED = "refused"


# How to reach each state (CLOSED three ways: the handshake, the deadline, a lost socket).
def _open():
    return ClosingHandshake()


def _local_closing():
    h = ClosingHandshake()
    h.request_close(CloseCode.SESSION_ENDED, "session ended", queued=2)
    return h


def _remote_closing():
    h = ClosingHandshake()
    h.peer_closed(CloseCode.NORMAL_CLOSURE)
    return h


def _close_sent():
    h = ClosingHandshake()
    h.request_close(CloseCode.GOING_AWAY, "idle timeout", queued=0)
    h.close_written()
    return h


def _closed_by_handshake():
    h = _close_sent()
    h.peer_closed(CloseCode.GOING_AWAY)
    return h


def _closed_by_deadline():
    h = _local_closing()
    h.deadline_expired()
    return h


def _closed_by_eof():
    h = ClosingHandshake()
    h.connection_lost()
    return h


STATES = {
    "open": (_open, OPEN),
    "local-closing": (_local_closing, LOCAL_CLOSING),
    "remote-closing": (_remote_closing, REMOTE_CLOSING),
    "close-sent": (_close_sent, CLOSE_SENT),
    "closed-handshake": (_closed_by_handshake, CLOSED),
    "closed-deadline": (_closed_by_deadline, CLOSED),
    "closed-eof": (_closed_by_eof, CLOSED),
}

EVENTS = {
    "request_close": lambda h: h.request_close(CloseCode.POLICY_VIOLATION, "later", queued=1),
    "fail": lambda h: h.fail(CloseCode.PROTOCOL_ERROR, "bad frame", queued=1),
    "peer_closed": lambda h: h.peer_closed(CloseCode.NORMAL_CLOSURE),
    "close_written": lambda h: h.close_written(),
    "deadline_expired": lambda h: h.deadline_expired(),
    "connection_lost": lambda h: h.connection_lost(),
    "data_sent": lambda h: h.data_sent(1),
    "control_sent": lambda h: h.control_sent(),
    "close_frame": lambda h: h.close_frame(),
}

# state name -> event -> the state after it, or REFUSED (LocalProtocolError, state unchanged).
TRANSITIONS = {
    "open": {
        "request_close": LOCAL_CLOSING, "fail": LOCAL_CLOSING, "peer_closed": REMOTE_CLOSING,
        "close_written": REFUSED, "deadline_expired": CLOSED, "connection_lost": CLOSED,
        "data_sent": OPEN, "control_sent": OPEN, "close_frame": REFUSED,
    },
    "local-closing": {
        "request_close": LOCAL_CLOSING, "fail": LOCAL_CLOSING, "peer_closed": REMOTE_CLOSING,
        "close_written": CLOSE_SENT, "deadline_expired": CLOSED, "connection_lost": CLOSED,
        "data_sent": LOCAL_CLOSING, "control_sent": LOCAL_CLOSING, "close_frame": LOCAL_CLOSING,
    },
    "remote-closing": {
        "request_close": REMOTE_CLOSING, "fail": REFUSED, "peer_closed": REFUSED,
        "close_written": CLOSED, "deadline_expired": CLOSED, "connection_lost": CLOSED,
        "data_sent": REFUSED, "control_sent": REMOTE_CLOSING, "close_frame": REMOTE_CLOSING,
    },
    "close-sent": {
        "request_close": CLOSE_SENT, "fail": CLOSE_SENT, "peer_closed": CLOSED,
        "close_written": REFUSED, "deadline_expired": CLOSED, "connection_lost": CLOSED,
        "data_sent": REFUSED, "control_sent": REFUSED, "close_frame": REFUSED,
    },
    "closed-handshake": {
        "request_close": CLOSED, "fail": REFUSED, "peer_closed": REFUSED,
        "close_written": REFUSED, "deadline_expired": CLOSED, "connection_lost": CLOSED,
        "data_sent": REFUSED, "control_sent": REFUSED, "close_frame": REFUSED,
    },
    # A close was decided but its frame not written when the deadline struck: a write that was
    # under way may still complete (and is recorded); a read that was under way is ignored.
    "closed-deadline": {
        "request_close": CLOSED, "fail": CLOSED, "peer_closed": CLOSED,
        "close_written": CLOSED, "deadline_expired": CLOSED, "connection_lost": CLOSED,
        "data_sent": REFUSED, "control_sent": REFUSED, "close_frame": REFUSED,
    },
    "closed-eof": {
        "request_close": CLOSED, "fail": CLOSED, "peer_closed": CLOSED,
        "close_written": REFUSED, "deadline_expired": CLOSED, "connection_lost": CLOSED,
        "data_sent": REFUSED, "control_sent": REFUSED, "close_frame": REFUSED,
    },
}


def _snapshot(h: ClosingHandshake):
    return (h.state, h.code, h.reason, h.peer_code, h.peer_close_received, h.close_sent, h.failed,
            h.data_allowance())


def test_the_table_covers_every_event_in_every_state():
    assert set(TRANSITIONS) == set(STATES)
    for events in TRANSITIONS.values():
        assert set(events) == set(EVENTS)
    assert {state for _make, state in STATES.values()} == set(ConnectionState)


@pytest.mark.parametrize("state_name", sorted(STATES))
@pytest.mark.parametrize("event", sorted(EVENTS))
def test_every_event_in_every_state(state_name, event):
    make, state = STATES[state_name]
    h = make()
    assert h.state is state
    expected = TRANSITIONS[state_name][event]
    if expected == REFUSED:
        before = _snapshot(h)
        with pytest.raises(LocalProtocolError):
            EVENTS[event](h)
        assert _snapshot(h) == before, "a refused event changes nothing"
    else:
        EVENTS[event](h)
        assert h.state is expected


@pytest.mark.parametrize("state_name, accepts, expects, control, echo, allowance", [
    ("open", True, True, True, False, None),
    ("local-closing", False, True, True, False, 2),
    ("remote-closing", False, False, True, True, 0),
    ("close-sent", False, True, False, False, 0),
    ("closed-handshake", False, False, False, False, 0),
    ("closed-deadline", False, False, False, False, 0),
    ("closed-eof", False, False, False, False, 0),
])
def test_queries_in_every_state(state_name, accepts, expects, control, echo, allowance):
    h = STATES[state_name][0]()
    assert h.accepts_messages is accepts
    assert h.expects_frames is expects
    assert h.may_send_control is control
    assert h.must_echo is echo
    assert h.data_allowance() == allowance
    due = h.state in (LOCAL_CLOSING, REMOTE_CLOSING)
    assert h.close_frame_due(0) is due
    assert h.close_frame_due(1) is False, "never ahead of queued messages"


# ---------------------------------------------------------------- which code goes out


def test_a_local_close_sends_its_code_and_reason():
    h = ClosingHandshake()
    h.request_close(CloseCode.REPLACED, "replaced by a newer connection", queued=0)
    assert h.close_frame() == (4001, "replaced by a newer connection")
    assert h.close_written() is CLOSE_SENT and h.close_sent
    assert h.peer_closed(CloseCode.NORMAL_CLOSURE) is CLOSED
    assert (h.code, h.peer_code) == (CloseCode.REPLACED, CloseCode.NORMAL_CLOSURE)


def test_the_first_close_decision_wins():
    h = ClosingHandshake()
    h.request_close(CloseCode.SESSION_ENDED, "session ended", queued=3)
    h.request_close(CloseCode.GOING_AWAY, "idle timeout", queued=5)
    h.fail(CloseCode.PROTOCOL_ERROR, "bad frame", queued=4)
    assert (h.code, h.reason) == (CloseCode.SESSION_ENDED, "session ended")
    assert h.data_allowance() == 3, "a later request never lets more out"
    h.request_close(CloseCode.GOING_AWAY, "idle timeout", queued=1)
    assert h.data_allowance() == 1, "but it can make the close frame come sooner"
    h.request_close(CloseCode.GOING_AWAY, "idle timeout", queued=0)
    assert h.data_allowance() == 0 and h.close_frame_due(0)


def test_the_peer_closing_first_is_echoed_with_its_code_and_nothing_else():
    h = ClosingHandshake()
    assert h.peer_closed(CloseCode.GOING_AWAY) is REMOTE_CLOSING
    assert h.must_echo and not h.expects_frames and not h.accepts_messages
    assert h.data_allowance() == 0 and h.close_frame_due(0)
    assert h.close_frame() == (CloseCode.GOING_AWAY, "")
    assert h.close_written() is CLOSED


def test_an_empty_close_from_the_peer_is_echoed_empty():
    h = ClosingHandshake()
    h.peer_closed(None)
    assert h.code == CloseCode.NO_STATUS_RCVD and h.peer_code is None
    assert h.close_frame() == (None, "")


def test_the_peer_closing_while_we_close_keeps_our_code_and_drops_the_queue():
    h = ClosingHandshake()
    h.request_close(CloseCode.SESSION_ENDED, "session ended", queued=10)
    assert h.peer_closed(CloseCode.NORMAL_CLOSURE) is REMOTE_CLOSING
    assert h.close_frame() == (CloseCode.SESSION_ENDED, "session ended")
    assert h.data_allowance() == 0
    with pytest.raises(LocalProtocolError):
        h.data_sent(1)
    assert h.close_written() is CLOSED


def test_a_long_reason_is_clipped_on_a_character_boundary():
    h = ClosingHandshake()
    h.request_close(CloseCode.POLICY_VIOLATION, "é" * 100, queued=0)
    _code, reason = h.close_frame()
    assert len(reason.encode("utf-8")) <= MAX_CLOSE_REASON_BYTES and reason == "é" * 61
    assert clip_close_reason("short") == "short"
    assert h.reason == "é" * 100, "the log keeps the whole reason"


# ---------------------------------------------------------------- data before the close frame


def test_only_the_counted_messages_go_out_before_the_close_frame():
    h = ClosingHandshake()
    assert h.data_allowance() is None
    h.data_sent(1000)  # open: no limit
    h.request_close(CloseCode.SESSION_ENDED, "session ended", queued=3)
    h.data_sent(2)
    assert h.data_allowance() == 1 and not h.close_frame_due(1)
    with pytest.raises(LocalProtocolError, match="only 1 left"):
        h.data_sent(2)
    h.data_sent(1)
    assert h.data_allowance() == 0
    h.data_sent(0)  # nothing: always fine
    with pytest.raises(LocalProtocolError):
        h.data_sent(1)
    assert h.close_frame_due(0) and not h.close_frame_due(2)


def test_no_data_and_no_control_frame_after_our_close_frame():
    h = _close_sent()
    with pytest.raises(LocalProtocolError, match="CLOSE_SENT"):
        h.data_sent(1)
    with pytest.raises(LocalProtocolError, match="CLOSE_SENT"):
        h.control_sent()
    with pytest.raises(LocalProtocolError, match="already out"):
        h.close_written()
    assert h.state is CLOSE_SENT


def test_a_negative_count_is_refused():
    with pytest.raises(LocalProtocolError):
        ClosingHandshake().request_close(CloseCode.NORMAL_CLOSURE, "", queued=-1)


# ---------------------------------------------------------------- failing the connection


def test_failing_keeps_what_came_before_and_stops_parsing():
    h = ClosingHandshake()
    h.fail(CloseCode.PROTOCOL_ERROR, "unmasked frame from a client", queued=2)
    assert h.failed and not h.expects_frames and h.state is LOCAL_CLOSING
    assert h.data_allowance() == 2
    assert h.close_frame() == (CloseCode.PROTOCOL_ERROR, "unmasked frame from a client")
    h.data_sent(2)
    assert h.close_written() is CLOSE_SENT


def test_nothing_from_the_peer_is_reported_after_its_close_frame():
    h = _remote_closing()
    with pytest.raises(LocalProtocolError, match="second close frame"):
        h.peer_closed(CloseCode.NORMAL_CLOSURE)
    with pytest.raises(LocalProtocolError, match="after the peer's close frame"):
        h.fail(CloseCode.PROTOCOL_ERROR, "bad", queued=0)


def test_io_under_way_when_the_deadline_struck_is_tolerated_not_recorded_as_the_peers():
    h = _closed_by_deadline()
    assert h.peer_closed(CloseCode.NORMAL_CLOSURE) is CLOSED
    assert not h.peer_close_received and h.peer_code is None
    h.fail(CloseCode.PROTOCOL_ERROR, "bad", queued=0)
    assert not h.failed
    assert h.close_written() is CLOSED and h.close_sent
    with pytest.raises(LocalProtocolError):
        h.close_written()


def test_close_codes_read_as_numbers():
    assert CloseCode.SESSION_ENDED == 4002 and str(CloseCode.SESSION_ENDED) == "4002"
    assert f"{CloseCode.JOIN_REFUSED}" == "4403"
    assert CloseCode(1011) is CloseCode.INTERNAL_ERROR
    assert all(1000 <= code <= 1015 or 4000 <= code <= 4999 for code in CloseCode)
