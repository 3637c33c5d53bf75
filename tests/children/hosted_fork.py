"""A hosted site used before and after a fork: the child starts (and stops) a site of its own.

Reports each answer with the side of the fork that got it; the database
plugin reports its opens and closes with the PID.
"""

from __future__ import annotations

import os
import sys
from wsgiref.util import setup_testing_defaults

from report import report

from sitebus.hosted import wsgi_app

application = wsgi_app(sys.argv[1])


def get() -> str:
    environ: dict[str, object] = {"PATH_INFO": "/"}
    setup_testing_defaults(environ)
    return b"".join(application(environ, lambda status, headers: None)).decode()


report(f"before fork: {get()}")
child = os.fork()
if child == 0:
    report(f"child: {get()}")
    sys.exit(0)  # atexit runs: the child's site stops, not its parent's
_, status = os.waitpid(child, 0)
report(f"parent: {get()} (child exited {os.waitstatus_to_exitcode(status)})")
