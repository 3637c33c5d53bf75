"""How a log line looks: one text format and one JSON form for every sitebus log.

The bus's own default output, ``sitebus serve`` and the ``Logs`` plugin all
format records with these classes, so a line reads the same wherever it was
written.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

__all__ = ["TEXT_FORMAT", "JsonFormatter", "TextFormatter"]

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
        # Imported here: only JSON logs need it, and json (2.5 ms) is otherwise
        # not loaded by a `sitebus serve` start on cheroot, the default engine.
        import json

        return json.dumps(entry, ensure_ascii=False, default=str)
