"""How a log line looks: one text format and one JSON form for every sitebus log.

The bus's own default output, ``sitebus serve`` and the ``Logs`` plugin all
format records with these classes, so a line reads the same wherever it was
written. The bus's default output is here too: where its log goes while the
application has configured no logging.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime
from typing import Any

__all__ = ["TEXT_FORMAT", "JsonFormatter", "TextFormatter", "log_unconfigured"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _utc(created: float) -> str:
    stamp = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """Plain text lines whose ``%(asctime)s`` is ISO-8601 UTC with milliseconds."""

    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return time.strftime(datefmt, time.gmtime(record.created))
        return _utc(record.created)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message, and exception.

    ``exception`` (the traceback text) and ``stack`` appear only when the
    record has them. JSON escapes newlines, so a traceback stays on its line.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class _Stderr(logging.Handler):
    """Text lines to whatever ``sys.stderr`` is when a record comes (a test may swap it)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(TextFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr
            if stream is not None:
                stream.write(self.format(record) + "\n")
                stream.flush()
        except Exception:
            self.handleError(record)


_STDERR = _Stderr()


def log_unconfigured(
    logger: logging.Logger, level: int, message: str, exc: BaseException | None
) -> None:
    """Write a record of ``logger``, which has no handler, to stderr: the bus log by default.

    CherryPy's engine log shows on the screen by default, and so does ours:
    INFO and above (or the logger's own level, if set), one timestamped line
    each. As soon as the logger or any of its ancestors has a handler
    (``logging.basicConfig``, the ``Logs`` plugin, a host's configuration),
    the bus logs there instead and this is not called.
    """
    if logger.disabled or level < (logger.level or logging.INFO):
        return
    exc_info = None if exc is None else (type(exc), exc, exc.__traceback__)
    _STDERR.handle(logger.makeRecord(logger.name, level, __file__, 0, message, (), exc_info))
