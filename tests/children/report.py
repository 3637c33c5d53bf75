"""What a child process uses to talk to its test: report lines and a hold point."""

from __future__ import annotations

import os


def report(line: str) -> None:
    """Send one line to the test over the inherited report pipe."""
    fd = int(os.environ["SITEBUS_TEST_REPORT_FD"])
    os.write(fd, line.encode() + b"\n")


def hold() -> None:
    """Block until the test calls ``Child.release()``."""
    fd = int(os.environ["SITEBUS_TEST_HOLD_FD"])
    os.read(fd, 3)
