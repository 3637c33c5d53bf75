"""``sitebus run`` that also reports its exit and the lines a test waits for.

Those are "Starting", "Started", "Listening on", "Autoreload: watching" and
"Draining" (the health plugin's drain delay).

Run as ``run_reporting.py <run arguments>``; a re-exec runs it again with the
same arguments, so every generation reports. It reads the lines off stderr,
as a person would.
"""

from __future__ import annotations

import sys
from typing import TextIO

from report import report

from sitebus.cli import main


class _Tee:
    """Stands in for stderr: passes everything on, and reports the lines a test waits for."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        for line in text.splitlines():
            message = line.partition(" sitebus: ")[2]
            if message.startswith(
                ("Listening on ", "Started ", "Starting ", "Autoreload: watching ", "Draining ")
            ):
                report(message)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


if __name__ == "__main__":
    sys.stderr = _Tee(sys.stderr)  # type: ignore[assignment]  # write and flush are all it needs
    status = main(["run", *sys.argv[1:]])
    report(f"exited {status}")
    sys.exit(status)
