"""Autoreload side by side: idle CPU and write-to-trigger latency, 5,000 modules loaded.

Run: ``.venv/bin/python benchmarks/autoreload.py`` (needs the ``bench`` extra).
Two parts, both by default: ``--part idle`` is this file's measurement below;
``--part serve`` is edit to first response through a server with ``--reload``,
beside gunicorn and uvicorn (``reload_serve.py``, next to this file).

Each system runs in its own child process that imported a realistic set of
standard-library modules plus 5,000 generated modules, and watches them:

- CherryPy's ``cherrypy.process.plugins.Autoreloader``, default settings,
  subscribed to a ``wspbus.Bus``; its trigger is the bus's ``restart()``.
- a default ``watchfiles.watch()`` loop over the generated tree (what
  uvicorn's reloader runs); its trigger is a yielded set of changes.
- sitebus's ``Autoreload`` plugin, default options (inotify on Linux), and
  the same plugin on its watchfiles backend; the trigger is the ``reload``
  publication.

The children run at the same time, so the systems are measured side by side
under the same machine load: first all of them idle (CPU seconds from
``getrusage`` in each child over the window, scaled to a minute), then one
file edit at a time, made in each system's own copy of the tree; latency runs
from just before the write (parent) to the trigger (child), both on the
system-wide monotonic clock. After each trigger every system is re-armed and
reports ready, then a random fraction of a second passes before the next edit
(CherryPy polls once a second). No process is re-executed: restart() is
replaced by a report.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

SYSTEMS = {
    "cherrypy": "CherryPy Autoreloader",
    "watchfiles": "watchfiles.watch() default",
    "sitebus": "sitebus Autoreload",
    "sitebus-watchfiles": "sitebus, watchfiles backend",
}
STDLIB = (
    "argparse",
    "asyncio",
    "base64",
    "collections",
    "concurrent.futures",
    "contextlib",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "email.mime.text",
    "email.parser",
    "enum",
    "functools",
    "gzip",
    "hashlib",
    "hmac",
    "html.parser",
    "http.client",
    "http.cookies",
    "http.server",
    "importlib.metadata",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "logging.handlers",
    "mimetypes",
    "multiprocessing",
    "pathlib",
    "pickle",
    "queue",
    "random",
    "re",
    "secrets",
    "selectors",
    "shutil",
    "smtplib",
    "socket",
    "sqlite3",
    "ssl",
    "string",
    "struct",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "traceback",
    "typing",
    "unittest",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "wsgiref.simple_server",
    "xml.etree.ElementTree",
    "zipfile",
    "zoneinfo",
)
PACKAGES = 50


# -- the parent -------------------------------------------------------------


def generate(root: Path, modules: int) -> list[Path]:
    """A source tree of ``modules`` small modules in PACKAGES packages."""
    files = []
    per_package = max(1, modules // PACKAGES)
    for index in range(modules):
        package = root / f"app_{index // per_package:02d}"
        if not package.exists():
            package.mkdir(parents=True)
            (package / "__init__.py").write_text("")
        path = package / f"mod_{index:04d}.py"
        path.write_text(
            f'"""Generated module {index}."""\n\n'
            f"VALUE = {index}\n\n\n"
            f"def handler_{index}(request):\n"
            f"    return {{'module': {index}, 'path': request}}\n\n\n"
            f"class Model{index}:\n"
            f"    table = 'model_{index}'\n\n"
            f"    def __init__(self, **fields):\n"
            f"        self.fields = fields\n"
        )
        files.append(path)
    return files


class Child:
    def __init__(self, system: str, tree: Path) -> None:
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": ""}
        self.system = system
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--child", system, "--tree", str(tree)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self.process.stdout is not None and self.process.stdin is not None
        self.fd = self.process.stdout.fileno()
        self.stdin: IO[bytes] = self.process.stdin
        self.buffer = b""

    def send(self, line: str) -> None:
        self.stdin.write(line.encode() + b"\n")
        self.stdin.flush()

    def expect(self, word: str, timeout: float = 120.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([self.fd], [], [], max(0, deadline - time.monotonic()))
            chunk = os.read(self.fd, 4096) if ready else b""
            if not chunk:
                raise SystemExit(f"{self.system}: no {word!r} within {timeout} s")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        parts = line.decode().split()
        if not parts or parts[0] != word:
            raise SystemExit(f"{self.system}: expected {word!r}, got {line!r}")
        return parts[1:]

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modules", type=int, default=5000)
    parser.add_argument("--idle", type=float, default=20.0, help="idle window, seconds")
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--part", choices=("idle", "serve", "all"), default="all")
    parser.add_argument("--serve-edits", type=int, default=20, help="edits per server")
    parser.add_argument("--child")
    parser.add_argument("--tree")
    args = parser.parse_args()
    if args.child:
        return run_child(args.child, Path(args.tree))
    if args.part in ("idle", "all"):
        bench_idle(args)
    if args.part in ("serve", "all"):
        import reload_serve  # beside this file, which is first on sys.path when run

        if args.part == "all":
            print()
        reload_serve.bench(args.serve_edits)


def bench_idle(args: Any) -> None:
    """Idle CPU and write-to-trigger latency of each watcher, in child processes."""

    systems = args.systems.split(",")
    workdir = Path(tempfile.mkdtemp(prefix="sitebus-bench-autoreload-"))
    children: list[Child] = []
    try:
        # One tree per system: what one system does in its tree (sitebus removes
        # stale bytecode) must not show up as events for another.
        trees = {system: generate(workdir / system, args.modules) for system in systems}
        began = time.monotonic()
        for system in systems:
            children.append(Child(system, workdir / system))
            loaded = children[-1].expect("ready")
            print(f"  {SYSTEMS[system]}: {loaded[0]} modules loaded", file=sys.stderr)
        print(f"  children up in {time.monotonic() - began:.1f} s", file=sys.stderr)

        for child in children:
            child.send("cpu")
        before = {c.system: float(c.expect("cpu")[0]) for c in children}
        time.sleep(args.idle)
        for child in children:
            child.send("cpu")
        idle = {
            c.system: (float(c.expect("cpu")[0]) - before[c.system]) * 60 / args.idle
            for c in children
        }

        latencies: dict[str, list[float]] = {c.system: [] for c in children}
        step = max(1, args.modules // args.edits)
        phases = random.Random(5)
        for edit in range(args.edits):
            # A random moment within a second: CherryPy polls every second from
            # its re-arm on, and a fixed delay would always hit the same phase.
            time.sleep(phases.random())
            index = (edit * step + step // 2) % args.modules
            written = {}
            for child in children:
                path = trees[child.system][index]
                text = path.read_text().replace("VALUE = ", f"VALUE = {edit} + ", 1)
                written[child.system] = time.monotonic()
                path.write_text(text)
            for child in children:
                seen = float(child.expect("trigger")[0])
                latencies[child.system].append((seen - written[child.system]) * 1000)
            for child in children:
                child.send("rearm")
            for child in children:
                child.expect("ready")
    finally:
        for child in children:
            child.close()
        shutil.rmtree(workdir, ignore_errors=True)

    report(args, idle, latencies)


def report(args: Any, idle: dict[str, float], latencies: dict[str, list[float]]) -> None:
    base_cpu = idle.get("cherrypy")
    base_median = statistics.median(latencies["cherrypy"]) if "cherrypy" in latencies else None
    print(
        f"autoreload: {args.modules} generated modules + {len(STDLIB)} stdlib imports,"
        f" idle window {args.idle:g} s (scaled to a minute), {args.edits} edits"
    )
    header = (
        f"{'system':<30} {'idle CPU s/min':>14} {'x CherryPy':>10}"
        f" {'median ms':>10} {'p95 ms':>8} {'x CherryPy':>10}"
    )
    print(header)
    print("-" * len(header))
    for system, values in latencies.items():
        median = statistics.median(values)
        cpu_ratio = f"{idle[system] / base_cpu:.4f}" if base_cpu else "-"
        lat_ratio = f"{median / base_median:.3f}" if base_median else "-"
        print(
            f"{SYSTEMS[system]:<30} {idle[system]:>14.4f} {cpu_ratio:>10}"
            f" {median:>10.1f} {percentile(values, 0.95):>8.1f} {lat_ratio:>10}"
        )
    print("targets for sitebus: idle CPU <= 0.02x CherryPy, median <= 80 ms, p95 <= 150 ms")


# -- the children -----------------------------------------------------------


def say(*words: object) -> None:
    sys.stdout.write(" ".join(map(str, words)) + "\n")
    sys.stdout.flush()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load(tree: Path) -> int:
    import importlib

    for name in STDLIB:
        importlib.import_module(name)
    sys.path.insert(0, str(tree))
    count = 0
    for package in sorted(tree.iterdir()):
        for module in sorted(package.glob("mod_*.py")):
            importlib.import_module(f"{package.name}.{module.stem}")
            count += 1
    return count


def run_child(system: str, tree: Path) -> None:
    count = load(tree)
    triggered = lambda: say("trigger", repr(time.monotonic()))  # noqa: E731  # one line each
    rearm = arm(system, tree, triggered)
    say("ready", count)
    for line in sys.stdin:
        command = line.strip()
        if command == "cpu":
            say("cpu", repr(cpu_seconds()))
        elif command == "rearm":
            rearm()
            say("ready", count)


def arm(system: str, tree: Path, triggered: Any) -> Any:
    """Start watching; return the function that re-arms the watcher after a trigger."""
    if system == "cherrypy":
        from cherrypy.process import plugins, wspbus

        cbus = wspbus.Bus()
        cbus.restart = triggered
        reloader = plugins.Autoreloader(cbus)
        reloader.subscribe()
        cbus.start()

        def wait_first_pass() -> None:
            # Its first pass, a second after start, records every file's mtime.
            while len(reloader.mtimes) < len(reloader.sysfiles()):
                time.sleep(0.01)

        def rearm_cherrypy() -> None:
            reloader.stop()
            reloader.start()
            wait_first_pass()

        wait_first_pass()
        return rearm_cherrypy
    if system == "watchfiles":
        import watchfiles

        armed = threading.Event()
        armed.set()

        def loop() -> None:
            for _changes in watchfiles.watch(tree):
                if armed.is_set():  # one trigger per edit, as for the others
                    armed.clear()
                    triggered()

        threading.Thread(target=loop, daemon=True).start()
        return armed.set

    from sitebus import Bus
    from sitebus.plugins.autoreload import Autoreload, AutoreloadOptions

    bus = Bus(logger=None)
    bus.restart = lambda: None  # type: ignore[method-assign]  # measured, not carried out
    bus.subscribe("reload", lambda paths: triggered())
    backend = "watchfiles" if system == "sitebus-watchfiles" else "auto"
    plugin = Autoreload(bus, AutoreloadOptions(backend=backend))
    plugin.subscribe()
    bus.start()
    plugin.wait_ready()

    def rearm_sitebus() -> None:
        plugin.stop()
        plugin.start()
        plugin.wait_ready()

    return rearm_sitebus


if __name__ == "__main__":
    main()
