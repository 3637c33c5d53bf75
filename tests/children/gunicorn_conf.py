"""gunicorn hooks that report to the test: the port once listening, each worker once booted."""

from __future__ import annotations

import os
from typing import Any

from report import report


def when_ready(server: Any) -> None:
    report(f"ready {server.LISTENERS[0].sock.getsockname()[1]}")


def post_worker_init(worker: Any) -> None:
    report(f"worker {os.getpid()}")
