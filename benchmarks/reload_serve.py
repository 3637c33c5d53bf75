"""Edit to first response with the new code: ``sitebus serve --reload`` beside gunicorn and uvicorn.

Run: ``.venv/bin/python benchmarks/reload_serve.py`` (needs the ``bench``
extra), or as the ``serve`` part of ``benchmarks/autoreload.py``.

Every system serves a tiny app from its own scratch folder, on its own free
loopback port, all at the same time:

- ``python -m sitebus serve app:app --reload`` (cheroot, its default for WSGI),
  and the same with ``--engine wsgiref``;
- ``gunicorn --reload app:app`` (its default sync worker and reload engine);
- ``uvicorn --reload app:asgi`` (an ASGI twin of the app).

The app answers ``version N``. One edit at a time, systems interleaved, a
random fraction of half a second apart (gunicorn polls once a second): the
benchmark writes version N+1 as an editor does (a temporary file, then
``os.replace``) and, from just before the replace, asks again and again on
fresh connections, 5 ms apart, until the answer is the new version. The
latency runs to the end of that answer. A request that is refused, reset,
times out, answers a status other than 200 or a body that is neither the old
nor the new version (a traceback) is a failed request.

Then, once per system, the syntax-error case: a broken app.py, ~1 s of
requests (what did clients get?), then the fixed file and the time to its
version; then the same for an import error (app.py compiles, but raises a
``NameError`` as it runs): the server must survive it and serve the fix.
Every server runs in its own process group, which is killed and reaped at
the end, also on error.

Polling and sleeping are fine here: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

PY = sys.executable
HOST = "127.0.0.1"
SYSTEMS = {
    "sitebus": "sitebus serve --reload",
    "sitebus-wsgiref": "sitebus, --engine wsgiref",
    "gunicorn": "gunicorn --reload",
    "uvicorn": "uvicorn --reload",
}
BASELINE = "gunicorn"
GIVE_UP = 15.0  # seconds an edit may take before it counts as missed
BROKEN_WINDOW = 1.0  # seconds of requests while app.py has a syntax error

APP = '''"""A tiny site whose answer names the version of its code."""

VERSION = {version}
BODY = f"version {{VERSION}}".encode()
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]


async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({{"type": message["type"] + ".complete"}})
            if message["type"] == "lifespan.shutdown":
                return
    headers = [(k.lower().encode(), v.encode()) for k, v in HEADERS]
    await send({{"type": "http.response.start", "status": 200, "headers": headers}})
    await send({{"type": "http.response.body", "body": BODY}})
'''
BROKEN = APP.replace("VERSION = {version}", "VERSION = ({version}")
# Compiles, but fails as the module runs: the case that once ended sitebus serve --reload.
IMPORT_ERROR = APP.replace("VERSION = {version}", "VERSION = {version}\nundefined_name")


def command(system: str, port: int) -> list[str]:
    """The command line that starts ``system`` on ``port``, from its scratch folder."""
    if system == "sitebus":
        return [PY, "-m", "sitebus", "serve", "app:app", "--bind", f"{HOST}:{port}", "--reload"]
    if system == "sitebus-wsgiref":
        return [*command("sitebus", port), "--engine", "wsgiref"]
    if system == "gunicorn":
        return [PY, "-m", "gunicorn", "--reload", "-b", f"{HOST}:{port}", "app:app"]
    if system == "uvicorn":
        return [PY, "-m", "uvicorn", "--reload", "--port", str(port), "app:asgi"]
    raise ValueError(f"unknown system {system!r}; expected one of {', '.join(SYSTEMS)}")


def get(port: int, timeout: float) -> tuple[str, bytes]:
    """One GET on a fresh connection: ("ok", body) or (failure, b"")."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except ConnectionRefusedError:
        return "refused", b""
    except (ConnectionResetError, BrokenPipeError):
        return "reset", b""
    except TimeoutError:
        return "no answer", b""
    if not data:
        return "closed", b""
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1].decode()
    if status != "200":
        kind = "traceback" if b"Traceback" in body else "page"
        return f"{status} {kind}", body
    return "ok", body


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """One server process in its own folder and process group; its output is kept."""

    def __init__(self, system: str, folder: Path) -> None:
        self.system = system
        self.folder = folder
        self.app = folder / "app.py"
        self.version = 0
        folder.mkdir()
        self.app.write_text(APP.format(version=0))
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.proc = subprocess.Popen(
            command(system, self.port),
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a group of its own: --reload spawns children
        )
        self.lines: list[tuple[float, str]] = []
        self.phases: list[tuple[float, float, float]] = []  # ms from the write, see _note_phases
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._changed:
                self.lines.append((time.monotonic(), raw.decode(errors="replace").rstrip()))
                self._changed.notify_all()

    def wait_log(self, text: str, count: int, timeout: float = 30.0) -> bool:
        """Wait until ``text`` appeared in ``count`` lines of the output."""
        with self._changed:
            return self._changed.wait_for(
                lambda: sum(text in line for _, line in self.lines) >= count, timeout
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.answer(2.0) == ("ok", self.body(self.version)):
                if self.system.startswith("sitebus"):
                    self.wait_watching()
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        raise RuntimeError(f"{self.system} did not answer within {timeout} s:\n{self.tail()}")

    def wait_watching(self) -> None:
        """sitebus logs "Autoreload: watching" once per process image."""
        images = 1 + sum("Re-executing" in line for _, line in self.lines)
        if not self.wait_log("Autoreload: watching", images):
            raise RuntimeError(f"{self.system}: autoreload not watching:\n{self.tail()}")

    def tail(self, count: int = 20) -> str:
        return "\n".join(line for _, line in self.lines[-count:])

    @staticmethod
    def body(version: int) -> bytes:
        return f"version {version}".encode()

    def answer(self, timeout: float = 10.0) -> tuple[str, bytes]:
        return get(self.port, timeout)

    def write(self, text: str) -> float:
        """Save app.py as an editor does; return the moment just before the rename."""
        temporary = self.folder / ".app.py.tmp"
        temporary.write_text(text)
        written = time.monotonic()
        os.replace(temporary, self.app)
        return written

    def edit(self, text: str, version: int, failures: Counter[str]) -> float | None:
        """Write ``text`` (serving ``version``); ms until it answers, None if it never did."""
        old, new = self.body(self.version), self.body(version)
        written = self.write(text)
        while time.monotonic() - written < GIVE_UP:
            kind, body = self.answer()
            if kind == "ok" and body == new:
                answered = time.monotonic()
                self.version = version
                self._note_phases(written, answered)
                return (answered - written) * 1000
            if kind != "ok":
                failures[kind] += 1
            elif body != old:
                failures["other body"] += 1
            time.sleep(0.005)
        self.version = version
        return None

    def _note_phases(self, written: float, answered: float) -> None:
        """For sitebus: when its log said "restarting" and "Re-executing", from the write."""
        with self._changed:
            lines = [(at, line) for at, line in self.lines if at >= written]
        marks = [
            next((at for at, line in lines if text in line), None)
            for text in ("changed; restarting", "Re-executing")
        ]
        if all(marks):
            decided, execs = (m - written for m in marks if m is not None)
            self.phases.append((decided * 1000, execs * 1000, (answered - written) * 1000))

    def close(self) -> None:
        with_group = True
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            with_group = False
        self.proc.wait(30)
        if with_group:  # the leader is reaped; a child may linger a moment
            for _ in range(100):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    break
                time.sleep(0.01)
        self._reader.join(5)


def broken_window(server: Server, template: str = BROKEN) -> Counter[str]:
    """What clients get for ~1 s while app.py is broken (``template``, a syntax error)."""
    got: Counter[str] = Counter()
    old = server.body(server.version)
    server.write(template.format(version=server.version + 1))
    began = time.monotonic()
    while time.monotonic() - began < BROKEN_WINDOW:
        kind, body = server.answer(timeout=BROKEN_WINDOW + 0.5)
        if kind == "ok":
            kind = "old version" if body == old else f"body {body[:30]!r}"
        got[kind] += 1
        time.sleep(0.005)
    return got


def bench(edits: int = 20, systems: list[str] | None = None, seed: int = 5) -> None:
    """Start every system, edit each ``edits`` times interleaved, then the syntax-error case."""
    systems = systems or list(SYSTEMS)
    workdir = Path(tempfile.mkdtemp(prefix="sitebus-bench-reload-serve-"))
    servers: list[Server] = []
    latencies: dict[str, list[float]] = {s: [] for s in systems}
    failures: dict[str, Counter[str]] = {s: Counter() for s in systems}
    missed: Counter[str] = Counter()
    broken: dict[str, Counter[str]] = {}
    fixed: dict[str, float | None] = {}
    fix_failures: dict[str, Counter[str]] = {s: Counter() for s in systems}
    failed_import: dict[str, Counter[str]] = {}
    import_fixed: dict[str, float | None] = {}
    import_fix_failures: dict[str, Counter[str]] = {s: Counter() for s in systems}
    phases = random.Random(seed)
    try:
        began = time.monotonic()
        for system in systems:
            servers.append(Server(system, workdir / system))
        for server in servers:
            server.wait_ready()
        print(f"  servers up in {time.monotonic() - began:.1f} s", file=sys.stderr)
        time.sleep(0.5)  # gunicorn's worker records mtimes on its first pass
        for round_ in range(edits):
            for server in servers:
                time.sleep(phases.random() / 2)
                version = server.version + 1
                took = server.edit(APP.format(version=version), version, failures[server.system])
                if took is None:
                    missed[server.system] += 1
                else:
                    latencies[server.system].append(took)
                if server.system.startswith("sitebus"):
                    server.wait_watching()
            print(f"  round {round_ + 1}/{edits} done", file=sys.stderr)
        for server in servers:
            time.sleep(0.5)
            broken[server.system] = broken_window(server)
            version = server.version + 1
            fixed[server.system] = server.edit(
                APP.format(version=version), version, fix_failures[server.system]
            )
            if server.system.startswith("sitebus"):
                server.wait_watching()
        for server in servers:
            time.sleep(0.5)
            failed_import[server.system] = broken_window(server, IMPORT_ERROR)
            version = server.version + 1
            import_fixed[server.system] = server.edit(
                APP.format(version=version), version, import_fix_failures[server.system]
            )
            if server.system.startswith("sitebus"):
                server.wait_watching()
    except BaseException:
        for server in servers:
            print(f"--- {server.system} output:\n{server.tail()}", file=sys.stderr)
        raise
    finally:
        for server in servers:
            server.close()
        shutil.rmtree(workdir, ignore_errors=True)
    report(edits, latencies, failures, missed, broken, fixed, fix_failures)
    print("\nimport error: app.py compiles but raises NameError as it runs, then is fixed")
    header = f"{'system':<26} {'fix ms':>7} {'failed':>6}  served while app.py failed on import"
    print(header)
    print("-" * len(header))
    for system in latencies:
        fix = import_fixed.get(system)
        fix_text = f"{fix:.0f}" if fix is not None else "never"
        print(
            f"{SYSTEMS[system]:<26} {fix_text:>7} {sum(import_fix_failures[system].values()):>6}"
            f"  {_counts(failed_import.get(system, Counter()))}"
        )
    print("target for sitebus: the fix is served (an import error never ends the dev server)")
    for server in servers:
        if server.phases:
            columns = zip(*server.phases, strict=True)
            decided, execs, answered = (statistics.median(column) for column in columns)
            print(
                f"  {SYSTEMS[server.system]}, medians from the write: log says restarting"
                f" {decided:.0f} ms, re-exec {execs:.0f} ms, new code answers {answered:.0f} ms"
            )


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{kind} x{n}" for kind, n in counter.most_common()) or "none"


def report(
    edits: int,
    latencies: dict[str, list[float]],
    failures: dict[str, Counter[str]],
    missed: Counter[str],
    broken: dict[str, Counter[str]],
    fixed: dict[str, float | None],
    fix_failures: dict[str, Counter[str]],
) -> None:
    base = latencies.get(BASELINE)
    base_median = statistics.median(base) if base else None
    print(
        f"reload through a server: edit -> first response with the new code,"
        f" {edits} edits per system, interleaved"
    )
    header = (
        f"{'system':<26} {'median ms':>9} {'p95 ms':>7} {'x gunicorn':>10}"
        f" {'failed':>6} {'missed':>6} {'fix ms':>7} {'failed':>6}"
        "  served while app.py had a syntax error"
    )
    print(header)
    print("-" * len(header))
    for system, values in latencies.items():
        median = statistics.median(values) if values else float("nan")
        p95 = percentile(values, 0.95) if values else float("nan")
        ratio = f"{median / base_median:.2f}" if base_median else "-"
        fix = fixed.get(system)
        fix_text = f"{fix:.0f}" if fix is not None else "never"
        print(
            f"{SYSTEMS[system]:<26} {median:>9.0f} {p95:>7.0f} {ratio:>10}"
            f" {sum(failures[system].values()):>6} {missed[system]:>6} {fix_text:>7}"
            f" {sum(fix_failures[system].values()):>6}  {_counts(broken.get(system, Counter()))}"
        )
    for system in latencies:
        for when, kinds in (("edits", failures[system]), ("fix", fix_failures[system])):
            if kinds:
                print(f"  {SYSTEMS[system]}, failed requests ({when}): {_counts(kinds)}")
    print(
        "failed: requests refused, reset, unanswered, non-200, or with a body neither old nor new;"
        " missed: edits not served within 15 s;"
    )
    print(
        "fix ms, failed: from saving the repaired file to its version, and the failed requests"
        " meanwhile (the broken state still answering counts)"
    )
    print("target for sitebus: median < 400 ms, no failed request")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--edits", type=int, default=20, help="edits per system")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    args = parser.parse_args(argv)
    bench(args.edits, args.systems.split(","))


if __name__ == "__main__":
    main()
