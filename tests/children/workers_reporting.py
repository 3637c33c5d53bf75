"""``sitebus serve`` or ``run`` (with workers) that reports every line of the master's own log.

Run as ``workers_reporting.py serve|run <arguments>``. The workers write to the
same standard error, but as ``sitebus.worker.PID``: only the master's lines
(``sitebus:``) are reported, message only, then ``exited STATUS``.
"""

from __future__ import annotations

import sys
from typing import TextIO

from report import report

from sitebus.cli import main


class _Tee:
    """Stands in for stderr: passes everything on, and reports the master's log lines."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        for line in text.splitlines():
            _head, sep, message = line.partition(" sitebus: ")
            if sep:
                report(message)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


if __name__ == "__main__":
    sys.stderr = _Tee(sys.stderr)  # type: ignore[assignment]  # write and flush are all it needs
    status = main(sys.argv[1:])
    report(f"exited {status}")
    sys.exit(status)
