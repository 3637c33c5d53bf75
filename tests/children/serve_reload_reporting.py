"""``sitebus serve --reload`` that reports serving, watching and exit to the test.

Every generation (a re-exec runs this again) reports ``serving <pid>`` once
its server accepts and ``watching`` once autoreload has read the files;
``app failed`` when the app could not be loaded and a 500 is served instead.
"""

from __future__ import annotations

import logging
import os
import sys

from report import report

from sitebus.cli import main


class _Forward(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if " serving on " in message:
            report(f"serving {os.getpid()} {message.rsplit(':', 1)[1]}")
        elif message.startswith("Autoreload: watching"):
            report("watching")
        elif message.startswith("Autoreload: not restarting"):
            report("not restarting")
        elif message.startswith("Autoreload: ") and "changed" in message:
            report("changed")
        elif "Serving 500 until a source file changes" in message:
            report("app failed")


if __name__ == "__main__":
    logging.getLogger("sitebus").addHandler(_Forward())
    status = main(["serve", *sys.argv[1:]])
    report(f"exited {status}")
    sys.exit(status)
