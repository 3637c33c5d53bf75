"""``sitebus serve`` or ``run`` that reports each SIGINT its handler takes, and its exit status.

Run as ``ctrl_c.py serve|run <arguments>``.

The test sends a second Ctrl-C only once the first was taken: two signals
sent back to back may be delivered as one.
"""

from __future__ import annotations

import sys
from types import FrameType

from report import report

from sitebus.cli import main
from sitebus.plugins.signals import Signals

_interrupt = Signals._interrupt


def _reporting_interrupt(self: Signals, signum: int, frame: FrameType | None) -> None:
    report("interrupt")
    _interrupt(self, signum, frame)


if __name__ == "__main__":
    Signals._interrupt = _reporting_interrupt  # type: ignore[method-assign]  # observe, not change
    status = main(sys.argv[1:])
    report(f"exited {status}")
    sys.exit(status)
