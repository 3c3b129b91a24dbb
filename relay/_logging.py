"""Structured logs: one event per line, with session and connection ids, never a payload.

Call sites name an event and its fields::

    log_event(log, logging.INFO, "session.created", session=session.id, chat=False)

``log_format = "text"`` (the default) writes ``2026-11-25T21:00:00Z INFO session.created
session=abc chat=false``; ``"json"`` writes one JSON object per line.  Field values are ids,
counts, codes and reasons: message bodies and tokens never reach a logger.
"""

from __future__ import annotations

import json
import logging
import sys
import time

__all__ = ["log_event", "configure_logging", "LOG_FORMATS"]

LOG_FORMATS = ("text", "json")
_FIELDS = "relay_fields"


def log_event(logger: logging.Logger, level: int, event: str, **fields) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={_FIELDS: fields})


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def _text_value(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if not text or any(c in text for c in ' "=\n\r\t'):
        return json.dumps(text)
    return text


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, _FIELDS, {})
        parts = [_timestamp(record), record.levelname, record.getMessage()]
        parts.extend(f"{key}={_text_value(value)}" for key, value in fields.items())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document = {"ts": _timestamp(record), "level": record.levelname.lower(), "logger": record.name,
                    "event": record.getMessage()}
        document.update(getattr(record, _FIELDS, {}))
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


def configure_logging(level: str, log_format: str = "text", stream=None) -> logging.Handler:
    """Send relay's logs (logger ``relay``) to ``stream`` (stderr) at ``level`` in ``log_format``."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter() if log_format == "json" else TextFormatter())
    logger = logging.getLogger("relay")
    for old in list(logger.handlers):
        if getattr(old, "_relay_handler", False):
            logger.removeHandler(old)
    handler._relay_handler = True
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
    return handler


class LimitLog:
    """``limit.hit`` log lines (SPEC 6: a line for every limit hit), at most ``per_second`` a second for
    each limit, so that an attacker cannot flood the log with them; the lines held back are counted
    and reported (``suppressed=N``) with the next line of that limit."""

    def __init__(self, logger: logging.Logger, per_second: int = 5, clock=time.monotonic) -> None:
        self._logger = logger
        self._per_second = per_second
        self._clock = clock
        self._windows: dict = {}  # limit -> [window start, lines in it, suppressed since the last line]

    def hit(self, limit: str, **fields) -> bool:
        """Log one hit of ``limit`` unless its budget for this second is spent; whether it was logged."""
        now = self._clock()
        window = self._windows.get(limit)
        if window is None or now - window[0] >= 1.0:
            suppressed = window[2] if window is not None else 0
            window = self._windows[limit] = [now, 0, suppressed]
            if len(self._windows) > 1024:  # limits are a fixed set; never let the table grow
                self._windows = {limit: window}
        if window[1] >= self._per_second:
            window[2] += 1
            return False
        window[1] += 1
        suppressed, window[2] = window[2], 0
        log_event(self._logger, logging.WARNING, "limit.hit", limit=limit,
                  suppressed=suppressed or None, **fields)
        return True


limit_log = LimitLog(logging.getLogger("relay.limits"))
