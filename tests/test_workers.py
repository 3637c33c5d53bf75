"""Worker processes under a master (``sitebus serve --workers N``), all real processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import CHILDREN, WAIT, Child
from test_serve import slow_clients
from test_servers import get

Spawn = Callable[..., Child]

# Importing it appends the PID to ./imported-by. ``/`` answers "vVERSION PID";
# ``/slow?MS`` appends a line to ./in-flight, then answers after MS milliseconds.
# (Workers inherit no report pipe from the test.)
VERSION_APP = """import os
import time

with open("imported-by", "a") as importers:
    importers.write(f"{{os.getpid()}}\\n")

VERSION = {version}
{extra}

def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        with open("in-flight", "a") as marks:
            marks.write("x\\n")
        time.sleep(int(environ["QUERY_STRING"]) / 1000)
    body = f"v{{VERSION}} {{os.getpid()}}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


def write_app(folder: Path, version: int, extra: str = "") -> None:
    (folder / "version_app.py").write_text(VERSION_APP.format(version=version, extra=extra))


def until(child: Child, prefix: str, timeout: float = WAIT) -> str:
    """Skip the master's log lines until one starts with ``prefix``; return it."""
    deadline = time.monotonic() + timeout
    while True:
        line = child.next_report(max(0.0, deadline - time.monotonic()))
        if line.startswith(prefix):
            return line


def master(
    spawn: Spawn, folder: Path, *extra: str, workers: int = 2
) -> tuple[Child, int, list[int]]:
    """A master serving ``folder``'s version_app with ``workers`` workers (v1 unless
    written already); the child, its port, the worker PIDs."""
    if not (folder / "version_app.py").exists():
        write_app(folder, 1)
    args = [str(CHILDREN / "workers_reporting.py"), "serve", "version_app:app"]
    args += ["--bind", "127.0.0.1:0", "--workers", str(workers), *extra]
    return started(spawn(args, cwd=folder))


def started(child: Child) -> tuple[Child, int, list[int]]:
    """``child`` once its master says every worker serves: it, its port, the worker PIDs."""
    pids = []
    while True:
        line = until(child, "")
        if line.startswith("Worker ") and line.endswith(" serving"):
            pids.append(int(line.split()[1]))
        elif " worker(s) serving on http://127.0.0.1:" in line:
            return child, int(line.rsplit(":", 1)[1]), pids


def new_worker(child: Child, old: list[int]) -> int:
    """The PID of the next worker, not in ``old``, that the master says serves."""
    while True:
        words = until(child, "Worker ").split()
        if words[2:] == ["serving"] and int(words[1]) not in old:
            return int(words[1])


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie child of the dead master counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def ps_children(parent: int) -> list[tuple[int, str]]:
    """The live children of ``parent``: PID and command line."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    command = cmdline.read().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if int(fields[1]) == parent and fields[0] != "Z":
                found.append((int(entry), command))
    return found


def wait_gone(pids: list[int], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"still running: {[p for p in pids if alive(p)]}"
        threading.Event().wait(0.02)  # polling /proc: no event tells a non-parent of an exit


def answering_pid(port: int) -> int:
    status, body = get(port)
    assert status == 200
    return int(body.split()[-1])


@pytest.fixture
def killer() -> Iterator[list[int]]:
    """PIDs to kill after the test, whatever happened: workers are not the test's children."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def stop(child: Child, pids: list[int]) -> None:
    child.signal(signal.SIGTERM)
    until(child, "exited 0")
    assert child.wait() == 0, child.output()
    wait_gone(pids)


def test_two_workers_serve_from_two_processes_and_sigterm_leaves_nothing(
    spawn: Spawn, killer: list[int], tmp_path: Path
) -> None:
    """Only the workers import the app and serve it; SIGTERM ends every process, status 0."""
    child, port, pids = master(spawn, tmp_path)
    killer += pids
    assert len(set(pids)) == 2 and child.pid not in pids
    imported_by = [int(pid) for pid in (tmp_path / "imported-by").read_text().split()]
    assert sorted(imported_by) == sorted(pids)
    seen = {answering_pid(port) for _ in range(200)}
    assert seen <= set(pids)
    stop(child, pids)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_and_sigint_drain_slow_requests_on_every_worker(
    spawn: Spawn, killer: list[int], tmp_path: Path, signum: int
) -> None:
    """Requests in flight in the workers complete; the master exits 0 once they are gone."""
    child, port, pids = master(spawn, tmp_path)
    killer += pids
    threads, results = slow_clients(port, 6, "/slow?1500")
    marks = tmp_path / "in-flight"
    deadline = time.monotonic() + WAIT
    while not marks.exists() or len(marks.read_text().split()) < 6:
        assert time.monotonic() < deadline, "the slow requests never arrived"
        threading.Event().wait(0.01)  # polling the app's marks, within a bound
    child.signal(signum)
    for thread in threads:
        thread.join(WAIT)
    assert results == [200] * 6, child.output()
    until(child, "exited 0")
    assert child.wait() == 0
    wait_gone(pids)


def test_a_worker_killed_outright_is_replaced_and_logged(
    spawn: Spawn, killer: list[int], tmp_path: Path
) -> None:
    child, port, pids = master(spawn, tmp_path)
    killer += pids
    os.kill(pids[0], signal.SIGKILL)
    line = until(child, f"Worker {pids[0]} exited")
    assert line == f"Worker {pids[0]} exited unexpectedly (killed by SIGKILL); starting another"
    new = new_worker(child, pids)
    killer.append(new)
    assert {answering_pid(port) for _ in range(100)} <= {pids[1], new}
    stop(child, [pids[1], new])


def test_a_wedged_worker_is_killed_after_its_heartbeat_timeout_and_replaced(
    spawn: Spawn, killer: list[int], tmp_path: Path
) -> None:
    """A stopped process sends no heartbeat: the master kills it, says why, starts another."""
    child, port, pids = master(spawn, tmp_path, "--worker-timeout", "1")
    killer += pids
    os.kill(pids[0], signal.SIGSTOP)
    line = until(child, f"Worker {pids[0]}: ")
    assert line == f"Worker {pids[0]}: no heartbeat for 1 s: killing it (SIGKILL)"
    new = new_worker(child, pids)
    killer.append(new)
    wait_gone([pids[0]])
    assert answering_pid(port) in {pids[1], new}
    stop(child, [pids[1], new])


def test_workers_stop_by_themselves_when_the_master_is_killed(
    spawn: Spawn, killer: list[int], tmp_path: Path
) -> None:
    child, _port, pids = master(spawn, tmp_path)
    killer += pids
    child.process.kill()
    child.wait()
    wait_gone(pids)


def test_rolling_restart_under_a_client_loop_fails_no_request_and_serves_the_new_code(
    spawn: Spawn, killer: list[int], tmp_path: Path
) -> None:
    """SIGHUP: new worker first, then one old one stops; every request of the loop succeeds."""
    write_app(tmp_path, 1)
    child, port, pids = master(spawn, tmp_path)
    killer += pids
    failures: list[BaseException] = []
    answers: list[bytes] = []
    done = threading.Event()

    def client_loop() -> None:
        while not done.is_set():
            try:
                status, body = get(port)  # a new connection each time
                assert status == 200, status
                answers.append(body)
            except Exception as exc:
                failures.append(exc)

    client = threading.Thread(target=client_loop)
    client.start()
    try:
        write_app(tmp_path, 2)
        child.signal(signal.SIGHUP)
        until(child, "Rolling restart: replacing 2 worker(s)")
        new_pids = []
        for _ in pids:
            line = until(child, "Worker ")
            assert line.endswith(" started"), line  # the new one starts before an old one stops
            new_pids.append(int(line.split()[1]))
            killer.append(new_pids[-1])
            until(child, f"Worker {new_pids[-1]} serving")
            until(child, "Worker ")  # an old one exits, replaced
        until(child, "Rolling restart done")
    finally:
        done.set()
        client.join(WAIT)
    assert failures == [], failures[:3]
    assert len(answers) > 20
    assert {answering_pid(port) for _ in range(50)} <= set(new_pids)
    assert get(port)[1].startswith(b"v2 ")
    wait_gone(pids)
    stop(child, new_pids)


def test_a_new_worker_that_fails_to_start_stops_the_rollout_and_the_old_ones_serve(
    spawn: Spawn, killer: list[int], tmp_path: Path
) -> None:
    write_app(tmp_path, 1)
    child, port, pids = master(spawn, tmp_path)
    killer += pids
    write_app(tmp_path, 2, extra="raise RuntimeError('broken deploy')")
    child.signal(signal.SIGHUP)
    line = until(child, "Rolling restart stopped: ")
    assert "before it accepted; the old workers keep serving" in line
    assert "broken deploy" in child.stderr()
    assert {answering_pid(port) for _ in range(30)} <= set(pids)
    assert get(port)[1].startswith(b"v1 ")
    stop(child, pids)


def test_sigttin_adds_a_worker_and_sigttou_removes_the_oldest(
    spawn: Spawn, killer: list[int], tmp_path: Path
) -> None:
    child, _port, pids = master(spawn, tmp_path)
    killer += pids
    child.signal(signal.SIGTTIN)
    until(child, "Workers wanted: 3")
    third = new_worker(child, pids)
    killer.append(third)
    child.signal(signal.SIGTTOU)
    until(child, "Workers wanted: 2")
    line = until(child, f"Worker {pids[0]} exited")
    assert line.endswith("after the number of workers went down")
    stop(child, [pids[1], third])


def test_max_requests_recycles_a_worker_gracefully(
    spawn: Spawn, killer: list[int], tmp_path: Path
) -> None:
    child, port, pids = master(spawn, tmp_path, "--max-requests", "5")
    killer += pids
    statuses = [get(port)[0] for _ in range(12)]
    assert statuses == [200] * 12
    line = until(child, "Worker ")
    assert line.endswith(" stopping by itself"), line
    stop(child, pids)


def test_status_lists_the_workers_with_their_requests_and_memory(
    spawn: Spawn, killer: list[int], tmp_path: Path
) -> None:
    pidfile = tmp_path / "site.pid"
    child, port, pids = master(
        spawn, tmp_path, "--pidfile", str(pidfile), "--worker-timeout", "0.4"
    )
    killer += pids
    for _ in range(10):
        get(port)
    deadline = time.monotonic() + WAIT
    while True:  # the next heartbeats carry the counts
        out = subprocess.run(
            [sys.executable, "-m", "sitebus", "status", "--pidfile", str(pidfile)],
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=True,
        ).stdout
        lines = out.splitlines()
        rows = {int(row.split()[0]): row.split() for row in lines[2:]}
        if sum(int(row[2]) for row in rows.values()) == 10 or time.monotonic() > deadline:
            break
        threading.Event().wait(0.1)
    assert lines[0] == str(child.pid)
    assert lines[1].split() == ["PID", "AGE", "REQUESTS", "RSS", "STATE"]
    assert set(rows) == set(pids)
    assert sum(int(row[2]) for row in rows.values()) == 10, out
    assert all(row[3].endswith("MiB") and row[4] == "serving" for row in rows.values()), out
    reload = subprocess.run(
        [sys.executable, "-m", "sitebus", "reload", "--pidfile", str(pidfile)],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=True,
    )
    assert reload.stdout == f"sent SIGHUP to PID {child.pid}\n"
    until(child, "Rolling restart done")
    new_pids = [pid for pid, _ in ps_children(child.pid)]
    killer += new_pids
    assert not set(new_pids) & set(pids)
    stop(child, new_pids)


def test_a_worker_that_cannot_import_the_app_fails_the_start_in_one_line(
    spawn: Spawn, tmp_path: Path
) -> None:
    write_app(tmp_path, 1, extra="raise RuntimeError('broken at import')")
    args = [sys.executable, "-m", "sitebus", "serve", "version_app:app"]
    args += ["--bind", "127.0.0.1:0", "--workers", "2"]
    result = subprocess.run(
        args, cwd=tmp_path, capture_output=True, text=True, timeout=WAIT, check=False
    )
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("sitebus: error:")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("sitebus: error: The workers did not start: worker ")
    worker = int(errors[0].split()[8])
    assert f'sitebus worker {worker}: error: Error importing "version_app:app"' in result.stderr
    assert "broken at import" in result.stderr


OPENED = """import os

from sitebus import Plugin


class Opened(Plugin):
    # An app plugin: records, in path, the PID of each process that starts it.

    def __init__(self, bus, path):
        super().__init__(bus)
        self.path = path

    def start(self):
        with open(self.path, "a") as opened:
            opened.write(f"{os.getpid()}\\n")
"""

SITE = """[site]
workers = 2
graceful_timeout = 5

[[server]]
bind = "127.0.0.1:0"

[[app]]
mount = "/"
wsgi = "version_app:app"

[[plugin]]
use = "opened:Opened"
path = "opened.txt"
"""


def test_run_with_site_workers_runs_the_app_plugins_once_per_worker_and_none_in_the_master(
    spawn: Spawn, killer: list[int], tmp_path: Path
) -> None:
    write_app(tmp_path, 1)
    (tmp_path / "opened.py").write_text(OPENED)
    (tmp_path / "site.toml").write_text(SITE)
    args = [str(CHILDREN / "workers_reporting.py"), "run", "site.toml", "--set", "site.name=two"]
    child, port, pids = started(spawn(args, cwd=tmp_path))
    killer += pids
    opened = [int(pid) for pid in (tmp_path / "opened.txt").read_text().split()]
    assert sorted(opened) == sorted(pids)
    assert {answering_pid(port) for _ in range(100)} <= set(pids)
    child.signal(signal.SIGHUP)
    until(child, "Rolling restart done")
    assert len((tmp_path / "opened.txt").read_text().split()) == 4
    stop(child, pids)


def test_a_worker_started_by_hand_says_it_needs_a_master() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sitebus.workers.worker"],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("sitebus worker: error: not started by a sitebus master")


def test_max_requests_without_workers_is_refused_in_one_line(tmp_path: Path) -> None:
    write_app(tmp_path, 1)
    result = subprocess.run(
        [sys.executable, "-m", "sitebus", "serve", "version_app:app", "--max-requests", "9"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == (
        "sitebus: error: --max-requests recycles worker processes: it needs --workers above 1\n"
    )


def test_systemd_hears_ready_once_every_worker_accepts_how_many_serve_and_the_reload(
    spawn: Spawn, killer: list[int], tmp_path: Path
) -> None:
    """READY=1 comes after both workers said ready, STATUS= counts them, and a rolling
    restart is systemd's reload: RELOADING=1, then READY=1 once every worker is replaced."""
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(tmp_path / "notify.sock"))
    receiver.settimeout(WAIT)
    try:
        write_app(tmp_path, 1)
        args = [str(CHILDREN / "workers_reporting.py"), "serve", "version_app:app"]
        args += ["--bind", "127.0.0.1:0", "--workers", "2"]
        child = spawn(args, cwd=tmp_path, env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
        messages = []
        while "READY=1" not in (message := receiver.recv(4096).decode()):
            messages.append(message)
        _, port, pids = started(child)
        killer += pids
        assert "STATUS=2 of 2 worker(s) serving" in messages, messages
        assert receiver.recv(4096).decode() == "STATUS=2 of 2 worker(s) serving"
        assert answering_pid(port) in pids
        child.signal(signal.SIGHUP)  # the reload of a Type=notify-reload unit
        reloading = receiver.recv(4096).decode().split("\n")
        assert reloading[0] == "RELOADING=1" and reloading[1].startswith("MONOTONIC_USEC=")
        while not (message := receiver.recv(4096).decode()).startswith("READY=1"):
            pass
        assert message == "READY=1\nSTATUS=2 of 2 worker(s) serving"
        until(child, "Rolling restart done")
        new_pids = [pid for pid, _ in ps_children(child.pid)]
        killer += new_pids
        stop(child, new_pids)
    finally:
        receiver.close()


def test_reload_with_workers_rolls_them_on_each_edit_and_survives_a_broken_one(
    spawn: Spawn, killer: list[int], tmp_path: Path
) -> None:
    """The workers tell the master their files; an edit is a rolling restart, every time,
    and an edit that breaks the import keeps the old workers serving until the fix."""
    child, port, pids = master(spawn, tmp_path, "--reload")
    killer += pids
    until(child, "Autoreload: watching")

    def edit(version: int, extra: str = "") -> None:
        write_app(tmp_path, version, extra)
        line = until(child, "Autoreload: /")
        assert line.endswith("/version_app.py changed; restarting"), line
        until(child, "Rolling restart: replacing 2 worker(s)")

    def serving() -> bytes:
        line = until(child, "Rolling restart ")
        assert line == "Rolling restart done", line
        killer.extend(pid for pid, _ in ps_children(child.pid))
        return get(port)[1]

    for version in (2, 3):
        edit(version)
        assert serving().startswith(f"v{version} ".encode())
        until(child, "Autoreload: watching")
    edit(4, extra="raise RuntimeError('half-saved')")
    assert until(child, "Rolling restart ").startswith("Rolling restart stopped: ")
    until(child, "Autoreload: watching")
    assert get(port)[1].startswith(b"v3 ")
    edit(5)
    assert serving().startswith(b"v5 ")
    stop(child, [pid for pid, _ in ps_children(child.pid)])


def test_sigusr1_reaches_every_worker(spawn: Spawn, killer: list[int], tmp_path: Path) -> None:
    """``sitebus graceful`` (SIGUSR1) reopens logs everywhere: each worker's bus publishes it."""
    child, _port, pids = master(spawn, tmp_path)
    killer += pids
    child.signal(signal.SIGUSR1)
    until(child, "Bus graceful")
    wanted = {f"sitebus.worker.{pid}: Bus graceful" for pid in pids}
    deadline = time.monotonic() + WAIT
    while not all(line in child.stderr() for line in wanted):
        assert time.monotonic() < deadline, child.output()
        threading.Event().wait(0.02)  # polling the shared log, within a bound
    stop(child, pids)


def test_protocol_lines_parse_and_junk_is_ignored() -> None:
    from sitebus.workers._protocol import Message, parse

    for message in (Message("ready"), Message("stopping"), Message("beat", 12, 4096)):
        parsed = parse(message.encode().rstrip(b"\n"))
        assert parsed is not None
        assert (parsed.kind, parsed.requests, parsed.rss) == (
            message.kind,
            message.requests,
            message.rss,
        )
    watch = parse(Message("watch", path="/srv/site/app é.py").encode().rstrip(b"\n"))
    assert watch is not None and (watch.kind, watch.path) == ("watch", "/srv/site/app é.py")
    for junk in (b"", b"beat x 1", b"beat 1", b"hello", b"watch relative.py"):
        assert parse(junk) is None


def test_a_record_from_another_parent_is_ignored_and_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A grandchild that inherited a worker's environment takes no descriptors."""
    from sitebus.workers._protocol import ENV, take_record

    monkeypatch.setenv(ENV, json.dumps({"master": os.getppid() + 1, "control": 5}))
    assert take_record() is None
    assert ENV not in os.environ
    monkeypatch.setenv(ENV, json.dumps({"master": os.getppid(), "control": 5}))
    assert take_record() == {"master": os.getppid(), "control": 5}


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", "0 is not a number from 1 to 1024"), ('"many"', "'many' is not a number from 1")],
)
def test_a_bad_site_workers_value_is_one_line_naming_the_key(
    tmp_path: Path, value: str, expected: str
) -> None:
    write_app(tmp_path, 1)
    (tmp_path / "site.toml").write_text(
        f'[site]\nworkers = {value}\n\n[[app]]\nmount = "/"\nwsgi = "version_app:app"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "sitebus", "check", "site.toml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "site.workers" in lines[0] and expected in lines[0], lines


def test_check_says_how_many_workers_would_run(tmp_path: Path) -> None:
    write_app(tmp_path, 1)
    (tmp_path / "site.toml").write_text(SITE)
    (tmp_path / "opened.py").write_text(OPENED)
    result = subprocess.run(
        [sys.executable, "-m", "sitebus", "check", "site.toml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=True,
    )
    assert "workers: 2, under a master" in result.stdout.splitlines()


WEDGE = """import threading

from sitebus import Plugin


class Wedge(Plugin):
    # An app plugin whose graceful listener never returns: the bus it runs on is wedged.

    def graceful(self):
        threading.Event().wait()
"""


def test_a_worker_whose_bus_is_wedged_falls_silent_and_is_replaced(
    spawn: Spawn, killer: list[int], tmp_path: Path
) -> None:
    """The heartbeat proves the worker's bus answers, not merely that a thread runs."""
    write_app(tmp_path, 1)
    (tmp_path / "wedge.py").write_text(WEDGE)
    site = SITE.replace('use = "opened:Opened"\npath = "opened.txt"', 'use = "wedge:Wedge"')
    (tmp_path / "site.toml").write_text(site.replace("[site]", "[site]\nworker_timeout = 1"))
    args = [str(CHILDREN / "workers_reporting.py"), "run", "site.toml"]
    child, port, pids = started(spawn(args, cwd=tmp_path))
    killer += pids
    os.kill(pids[0], signal.SIGUSR1)  # its graceful listener hangs
    line = until(child, f"Worker {pids[0]}: ")
    assert line == f"Worker {pids[0]}: no heartbeat for 1 s: killing it (SIGKILL)"
    new = new_worker(child, pids)
    killer.append(new)
    assert answering_pid(port) in {pids[1], new}
    stop(child, [pids[1], new])


def wait_for_status(port: int, path: str, wanted: int) -> None:
    deadline = time.monotonic() + WAIT
    while (status := get(port, path)[0]) != wanted:
        assert time.monotonic() < deadline, f"{path} still answers {status}"
        threading.Event().wait(0.02)  # polling the probe, as a load balancer does


@pytest.mark.parametrize("command", ["serve", "run"])
def test_with_health_the_workers_answer_503_on_readyz_while_the_master_drains(
    spawn: Spawn, killer: list[int], tmp_path: Path, command: str
) -> None:
    """A stop: every worker's /readyz turns 503 and they keep serving for the drain delay."""
    write_app(tmp_path, 1)
    if command == "serve":
        child, port, pids = master(spawn, tmp_path, "--drain-delay", "86400")
    else:
        (tmp_path / "site.toml").write_text(
            '[site]\nworkers = 2\n\n[[server]]\nbind = "127.0.0.1:0"\n\n'
            '[[app]]\nmount = "/"\nwsgi = "version_app:app"\n\n[health]\ndrain_delay = 86400\n'
        )
        args = [str(CHILDREN / "workers_reporting.py"), "run", "site.toml"]
        child, port, pids = started(spawn(args, cwd=tmp_path))
    killer += pids
    assert {get(port, "/readyz") for _ in range(20)} == {(200, b"ready\n")}
    assert get(port, "/healthz") == (200, b"live\n")
    child.signal(signal.SIGINT)
    until(child, "Draining for 86400 s")
    for _ in range(20):  # both workers, whichever accepts: told to drain, still serving
        wait_for_status(port, "/readyz", 503)
        assert answering_pid(port) in pids
        assert get(port, "/healthz")[0] == 200
    child.signal(signal.SIGINT)  # Ctrl-C twice cuts the drain short
    assert child.wait() == 1
    wait_gone(pids)


def test_health_probes_do_not_count_toward_max_requests(
    spawn: Spawn, killer: list[int], tmp_path: Path
) -> None:
    """A balancer probing every few seconds must not recycle the workers."""
    child, port, pids = master(spawn, tmp_path, "--health", "--max-requests", "3")
    killer += pids
    for _ in range(20):
        assert get(port, "/readyz")[0] == 200
        assert get(port, "/healthz")[0] == 200
    stop(child, pids)
    assert "max_requests" not in child.output()
