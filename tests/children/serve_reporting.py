"""``sitebus serve`` that also reports its "serving on" lines and its exit to the test.

Run as ``serve_reporting.py <serve arguments>``; a re-exec runs it again with
the same arguments, so every generation reports.
"""

from __future__ import annotations

import logging
import sys

from report import report

from sitebus.cli import main


class _Forward(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if " serving on " in message:
            report(message)


if __name__ == "__main__":
    logging.getLogger("sitebus").addHandler(_Forward())
    status = main(["serve", *sys.argv[1:]])
    report(f"exited {status}")
    sys.exit(status)
