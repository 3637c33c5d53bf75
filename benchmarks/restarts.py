"""A SIGTERM during a SIGHUP restart is never lost: 40 restarts per engine, each then stopped.

Run: ``.venv/bin/python benchmarks/restarts.py [--runs 40]`` (cheroot needs
the ``cheroot`` extra).

For each engine (cheroot, wsgiref) and each run, a fresh
``python -m sitebus serve`` serves a tiny app on a free loopback port. Once it
logs that it serves, it gets a SIGHUP (restart by re-exec), then a SIGTERM:

- ``at re-exec`` runs: the moment its log says ``Re-executing``;
- ``0-120 ms`` runs: a random delay from 0 to 120 ms after the SIGHUP, which
  lands anywhere in the restart (the old image's teardown, the exec, the new
  image's boot).

Every process must end with status 0 within ``GIVE_UP`` seconds; one that is
still serving then lost its SIGTERM, and is killed. The table shows, per
engine and timing, how many of the runs ended with status 0.

Sleeping is fine here: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ENGINES = ("cheroot", "wsgiref")
TIMINGS = ("at re-exec", "0-120 ms")
GIVE_UP = 15.0  # seconds a process may take to end after the SIGTERM

APP = """def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
"""


class Log:
    """Reads a server's stderr in a thread, to the end; ``wait_for`` a line containing text."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._ended = False
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = GIVE_UP) -> bool:
        """True once a line containing ``text`` was read; False at the end or timeout."""
        with self._changed:
            return self._changed.wait_for(
                lambda: any(text in line for line in self.lines) or self._ended, timeout
            ) and any(text in line for line in self.lines)


def one_run(engine: str, timing: str, folder: Path) -> int | None:
    """Serve, SIGHUP, SIGTERM as ``timing`` says; the exit status, or None if lost."""
    command = [sys.executable, "-m", "sitebus", "serve", "app:app", "--engine", engine]
    command += ["--bind", "127.0.0.1:0"]
    process = subprocess.Popen(
        command,
        cwd=folder,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    log = Log(process)
    try:
        if not log.wait_for(" serving on "):
            return process.wait()
        process.send_signal(signal.SIGHUP)
        if timing == "at re-exec":
            log.wait_for("Re-executing")
        else:
            time.sleep(random.uniform(0, 0.120))
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(GIVE_UP)
        except subprocess.TimeoutExpired:
            return None
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="restarts per engine and timing")
    runs = parser.parse_args().runs
    results: dict[tuple[str, str], Counter[str]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / "app.py").write_text(APP)
        for engine in ENGINES:
            for timing in TIMINGS:
                outcomes: Counter[str] = Counter()
                for _ in range(runs):
                    status = one_run(engine, timing, folder)
                    outcomes["lost" if status is None else f"status {status}"] += 1
                results[engine, timing] = outcomes
    print(f"SIGHUP then SIGTERM, {runs} runs each: processes that ended with status 0")
    print(f"{'engine':<10} {'SIGTERM':<12} {'status 0':>9}  other outcomes")
    for (engine, timing), outcomes in results.items():
        ok = outcomes.pop("status 0", 0)
        other = ", ".join(f"{count} {what}" for what, count in sorted(outcomes.items())) or "-"
        print(f"{engine:<10} {timing:<12} {ok:>6}/{runs}  {other}")


if __name__ == "__main__":
    main()
