"""``sitebus serve`` that reports the steps of its log to the test, generation by generation.

Run as ``serve_steps.py [--as-nobody] <serve arguments>``. Every log line that
contains one of ``STEPS`` is reported as its message (after ``sitebus: ``),
and ``exited N`` at the end; a re-exec runs it again with the same arguments,
so every generation reports. ``--as-nobody`` drops to user ``nobody`` before
serving, with everything the command needs imported while still root.
"""

from __future__ import annotations

import argparse  # noqa: F401  # imported while still root, see --as-nobody
import encodings.idna  # noqa: F401  # getaddrinfo needs it; imported while still root
import gettext  # noqa: F401  # imported while still root, see --as-nobody
import locale  # noqa: F401  # imported while still root, see --as-nobody
import os
import pwd
import sys
from typing import TextIO

import hello_app  # noqa: F401  # imported while still root, see --as-nobody
from report import report

import sitebus.servers.base  # imported while still root, see --as-nobody
import sitebus.servers.wsgiref  # noqa: F401  # imported while still root, see --as-nobody
from sitebus.cli import main

STEPS = (" serving on ", "Bus stopping", "Re-executing", "Not restarting", "Keeping ")


class _Tee:
    """Stands in for stderr: passes everything on, and reports the step lines."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        for line in text.splitlines():
            message = line.partition(" sitebus: ")[2]
            if any(step in message for step in STEPS):
                report(message)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--as-nobody"]:
        args = args[1:]
        if os.geteuid() == 0:  # not again after a re-exec
            nobody = pwd.getpwnam("nobody")
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
    sys.stderr = _Tee(sys.stderr)  # type: ignore[assignment]  # write and flush are all it needs
    status = main(["serve", *args])
    report(f"exited {status}")
    sys.exit(status)
