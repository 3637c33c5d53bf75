"""Worker processes side by side with gunicorn's and uvicorn's, in one run.

Run with ``python benchmarks/workers.py [--quick]`` after ``pip install -e
'.[test,bench]'``; needs wrk (``apt-get install wrk``). Everything runs on
loopback against real processes, each system in its own process group:

1. hello-world throughput (wrk, 1 thread, 16 connections) of ``sitebus serve``
   with 1 and 2 workers (cheroot, 32 threads: one process, then a master
   and two workers), against ``gunicorn -w 2 -k gthread --threads 32`` and
   ``uvicorn --workers 2``, and ``sitebus serve --workers 2`` on uvicorn for
   the same engine. The systems take turns, ``--rounds`` times, in a new
   order each round; the table shows each one's median. Nothing is pinned:
   two workers need both CPUs of a 2-core machine, and wrk shares them.
   Targets: 2 sitebus workers at least 1.6x one, and at least gunicorn's
   figure (the WSGI engines) and uvicorn's (the same ASGI engine).
2. a rolling restart under a client loop (new connection per request, 2
   threads): SIGHUP to the master, 1 s into the loop; the loop runs until
   every worker has been replaced, and 1 s more. Failed requests by kind,
   and the peak resident memory of all the system's processes during the
   restart next to the memory before it.

Polling and sleeping are fine here: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from servers import APP, HOST, cli, free_port, request  # after the path


def sitebus(port: int, app: str, workers: int) -> list[str]:
    threads = ["--threads", "32"] if app.endswith(":app") else []
    return [*cli("sitebus", "sitebus"), "serve", app, "--bind", f"{HOST}:{port}",
            *threads, "--backlog", "1024", "--log-level", "warning",
            "--workers", str(workers)]  # fmt: skip


def gunicorn(port: int) -> list[str]:
    return [*cli("gunicorn", "gunicorn"), "-b", f"{HOST}:{port}", "-k", "gthread",
            "--threads", "32", "-w", "2", "--log-level", "warning",
            "bench_app:app"]  # fmt: skip


def uvicorn(port: int) -> list[str]:
    return [*cli("uvicorn", "uvicorn"), "bench_app:asgi", "--host", HOST, "--port", str(port),
            "--workers", "2", "--backlog", "1024", "--log-level", "warning",
            "--no-access-log"]  # fmt: skip


SYSTEMS: dict[str, Callable[[int], list[str]]] = {
    "sitebus 1 worker": lambda port: sitebus(port, "bench_app:app", 1),
    "sitebus 2 workers": lambda port: sitebus(port, "bench_app:app", 2),
    "gunicorn -w 2 gthread": gunicorn,
    "sitebus 2 workers uvicorn": lambda port: sitebus(port, "bench_app:asgi", 2),
    "uvicorn --workers 2": uvicorn,
}
RESTARTED = ("sitebus 2 workers", "gunicorn -w 2 gthread", "uvicorn --workers 2")


class System:
    """A system started in its own session in ``folder``; every process killed on exit."""

    def __init__(self, name: str, folder: Path) -> None:
        self.name = name
        self.port = free_port()
        self.proc = subprocess.Popen(
            SYSTEMS[name](self.port),
            cwd=folder,
            stdin=subprocess.DEVNULL,  # not a terminal: SIGHUP restarts
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(folder)},
            start_new_session=True,
        )

    def wait_ready(self, workers: int) -> None:
        """Until it answers and has ``workers`` children that answer too (1 s to settle)."""
        end = time.monotonic() + 60
        while request(self.port, timeout=2.0) != "ok":
            if self.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"{self.name} did not start")
            time.sleep(0.01)
        while len(self.children()) < workers and time.monotonic() < end:
            time.sleep(0.01)
        time.sleep(1.0)

    def children(self) -> list[int]:
        return [pid for pid, _ in processes(self.proc.pid) if pid != self.proc.pid]

    def rss(self) -> int:
        return sum(rss for _, rss in processes(self.proc.pid))

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.01)

    def __enter__(self) -> System:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def processes(group: int) -> list[tuple[int, int]]:
    """(PID, resident bytes) of every live process in process group ``group``."""
    page = os.sysconf("SC_PAGE_SIZE")
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            if fields[0] == "Z" or int(fields[2]) != group:
                continue
            with open(f"/proc/{entry}/statm") as statm:
                found.append((int(entry), int(statm.read().split()[1]) * page))
        except (OSError, IndexError, ValueError):
            continue
    return found


def wrk(port: int, seconds: float) -> float:
    out = subprocess.run(
        ["wrk", "-t1", "-c16", f"-d{seconds:g}s", f"http://{HOST}:{port}/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(match.group(1)) if match else 0.0


def bench_throughput(folder: Path, rounds: int, seconds: float) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {name: [] for name in SYSTEMS}
    for _ in range(rounds):
        order = list(SYSTEMS)
        random.shuffle(order)
        for name in order:
            with System(name, folder) as system:
                system.wait_ready(0 if name == "sitebus 1 worker" else 2)
                wrk(system.port, 1.0)  # warm-up
                results[name].append(wrk(system.port, seconds))
    return results


def bench_restart(folder: Path, name: str) -> list[str]:
    """Failed requests by kind and peak memory across one SIGHUP under a client loop."""
    with System(name, folder) as system:
        system.wait_ready(2)
        old = set(system.children())
        before = system.rss()
        outcomes: Counter[str] = Counter()
        lock = threading.Lock()
        done = threading.Event()

        def client() -> None:
            while not done.is_set():
                outcome = request(system.port, timeout=10.0)
                with lock:
                    outcomes[outcome] += 1

        clients = [threading.Thread(target=client) for _ in range(2)]
        for thread in clients:
            thread.start()
        time.sleep(1.0)
        os.kill(system.proc.pid, signal.SIGHUP)
        peak = system.rss()
        end = time.monotonic() + 60
        replaced_at = None
        while time.monotonic() < end:
            peak = max(peak, system.rss())
            now = time.monotonic()
            # Two old processes gone: the workers (uvicorn keeps its resource tracker).
            if replaced_at is None and len(old - set(system.children())) >= 2:
                replaced_at = now
            if replaced_at is not None and now > replaced_at + 1.0:
                break
            time.sleep(0.01)
        done.set()
        for thread in clients:
            thread.join()
    total = sum(outcomes.values())
    failed = total - outcomes["ok"]
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(outcomes.items()) if k != "ok") or "-"
    return [
        name,
        str(total),
        str(failed),
        kinds,
        f"{before / 2**20:.0f}",
        f"{peak / 2**20:.0f}",
        "yes" if replaced_at is not None else "NO",
    ]


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 3 s")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rounds, seconds = (1, 3.0) if args.quick else (args.rounds, 5.0)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / "bench_app.py").write_text(APP)
        results = bench_throughput(folder, rounds, seconds)
        median = {name: statistics.median(values) for name, values in results.items()}
        one = median["sitebus 1 worker"]
        rows = [
            [
                name,
                f"{median[name]:,.0f}",
                f"{min(results[name]):,.0f}-{max(results[name]):,.0f}",
                f"{median[name] / one:.2f}x",
            ]
            for name in SYSTEMS
        ]
        table(
            f"Hello-world throughput, wrk -t1 -c16, median of {rounds} x {seconds:g} s "
            f"({os.cpu_count()} CPUs, nothing pinned)",
            ["system", "requests/s", "range", "vs sitebus 1 worker"],
            rows,
        )
        two = median["sitebus 2 workers"]
        print(f"2 workers / 1 worker: {two / one:.2f}x (target >= 1.6x)")
        print(
            f"sitebus 2 workers / gunicorn -w 2: {two / median['gunicorn -w 2 gthread']:.2f}x "
            "(target >= 1.0x)"
        )
        asgi = median["sitebus 2 workers uvicorn"] / median["uvicorn --workers 2"]
        print(f"sitebus 2 workers (uvicorn) / uvicorn --workers 2: {asgi:.2f}x")
        rows = [bench_restart(folder, name) for name in RESTARTED]
        table(
            "Rolling restart (SIGHUP) under a client loop, 2 threads, a new connection each",
            ["system", "requests", "failed", "failures", "MiB before", "MiB peak", "replaced"],
            rows,
        )


if __name__ == "__main__":
    main()
