"""``sitebus serve`` in real child processes: signals, restart under load, one-line errors."""

from __future__ import annotations

import gc
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import CHILDREN, WAIT, Child
from sitebus.errors import BindError
from sitebus.servers import parse_address
from test_servers import get

Spawn = Callable[..., Child]
APPS = {"cheroot": "app", "wsgiref": "app", "waitress": "app", "uvicorn": "asgi"}


def serve(
    spawn: Spawn, engine: str = "cheroot", *extra: str, app: str | None = None
) -> tuple[Child, int]:
    """Start ``sitebus serve`` on a free loopback port; return the child and the port."""
    args = [
        str(CHILDREN / "serve_reporting.py"),
        f"hello_app:{app or APPS[engine]}",
        "--bind",
        "127.0.0.1:0",
        "--engine",
        engine,
        *extra,
    ]
    child = spawn(args, cwd=CHILDREN)
    line = expect(child, f"{engine} serving on http://127.0.0.1:")
    return child, int(line.rsplit(":", 1)[1])


def expect(child: Child, report: str) -> str:
    """The next report that is not an ASGI lifespan event; it must start with ``report``."""
    line = child.next_report()
    while line.startswith("lifespan "):
        line = child.next_report()
    assert line.startswith(report), f"expected {report!r}, got {line!r}\n{child.output()}"
    return line


def slow_clients(
    port: int, count: int, path: str = "/slow?500"
) -> tuple[list[threading.Thread], list[object]]:
    """Start ``count`` threads each making one slow request; results land in the list."""
    results: list[object] = []

    def client() -> None:
        try:
            results.append(get(port, path)[0])
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=client) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads, results


def run_sitebus(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sitebus`` to completion in the children's folder."""
    return subprocess.run(
        [sys.executable, "-m", "sitebus", *args],
        cwd=CHILDREN,
        capture_output=True,
        text=True,
        timeout=WAIT,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_answers_then_exits_zero_on_sigterm_and_sigint(spawn: Spawn, signum: int) -> None:
    child, port = serve(spawn)
    assert get(port)[0] == 200
    child.signal(signum)
    child.expect("exited 0")
    assert child.wait() == 0, child.output()


def test_serve_graceful_stop_finishes_slow_requests(spawn: Spawn) -> None:
    child, port = serve(spawn)
    threads, results = slow_clients(port, 5)
    for _ in threads:
        child.expect("slow")
    child.signal(signal.SIGTERM)
    for thread in threads:
        thread.join(WAIT)
    assert results == [200] * 5
    child.expect("exited 0")
    assert child.wait() == 0


@pytest.mark.parametrize(
    ("engine", "app"), [*APPS.items(), ("uvicorn", "app")], ids=[*APPS, "uvicorn-wsgi"]
)
def test_a_request_overrunning_the_graceful_timeout_does_not_keep_the_site_alive(
    spawn: Spawn, engine: str, app: str
) -> None:
    child, port = serve(spawn, engine, "--graceful-timeout", "0.2", app=app)
    # Ten minutes: far past the exit the test waits for.
    threads, results = slow_clients(port, 1, "/slow?600000")
    expect(child, "slow")
    child.signal(signal.SIGTERM)
    expect(child, "exited 0")
    assert child.wait() == 0, child.output()
    threads[0].join(WAIT)
    assert results != [200], "the request was cut off, not answered"


def test_the_app_and_the_engine_log_through_the_sites_log(spawn: Spawn) -> None:
    child, port = serve(spawn, "uvicorn")
    assert get(port, "/log")[0] == 200
    child.signal(signal.SIGTERM)
    expect(child, "exited 0")
    assert child.wait() == 0
    stderr = child.stderr()
    assert "INFO hello_app: the app logs too" in stderr
    assert "uvicorn.error" not in stderr, "uvicorn's INFO lines retell the bus's"


def test_the_bus_and_the_app_write_one_line_format(spawn: Spawn) -> None:
    """The bus's lines and the app's logging records read the same, as the Logs plugin writes."""
    args = ["quiet_app:app", "--bind", "127.0.0.1:0", "--engine", "wsgiref"]
    child = spawn([str(CHILDREN / "serve_reporting.py"), *args], cwd=CHILDREN)
    port = int(expect(child, "wsgiref serving on http://").rsplit(":", 1)[1])
    assert get(port, "/log")[0] == 200
    child.signal(signal.SIGTERM)
    expect(child, "exited 0")
    assert child.wait() == 0
    stderr = child.stderr()
    for line in (
        "INFO sitebus: Bus started",
        "WARNING quiet_app: first logged after the start",
        "INFO sitebus: Bus exiting",
    ):
        stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
        assert re.search(rf"^{stamp} {line}$", stderr, re.MULTILINE), stderr


def test_the_collector_runs_again_once_the_app_and_engine_are_imported(spawn: Spawn) -> None:
    args = ["quiet_app:app", "--bind", "127.0.0.1:0", "--engine", "wsgiref"]
    child = spawn([str(CHILDREN / "serve_reporting.py"), *args], cwd=CHILDREN)
    port = int(expect(child, "wsgiref serving on http://").rsplit(":", 1)[1])
    # The default thresholds are back, and the start-up heap is frozen.
    assert get(port, "/gc") == (200, f"{gc.get_threshold()!r} True".encode())
    child.signal(signal.SIGTERM)
    expect(child, "exited 0")


PAUSE = """
import gc
from sitebus._startup import pause_collector, resume_collector
thresholds = pause_collector()
paused = gc.get_threshold()[0]
gc.set_threshold(1234)  # the app's own choice, made while its module ran
resume_collector(thresholds)
print(paused, gc.get_threshold()[0], gc.get_freeze_count())
"""


def test_thresholds_an_app_sets_while_imported_are_kept() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PAUSE], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["0", "1234", "0"]


def test_restart_lets_requests_in_flight_finish(spawn: Spawn) -> None:
    child, port = serve(spawn)
    threads, results = slow_clients(port, 3)
    for _ in threads:
        child.expect("slow")
    child.signal(signal.SIGHUP)
    expect(child, f"cheroot serving on http://127.0.0.1:{port}")
    for thread in threads:
        thread.join(WAIT)
    assert results == [200] * 3
    child.signal(signal.SIGTERM)
    expect(child, "exited 0")
    assert child.wait() == 0


@pytest.mark.parametrize("engine", sorted(APPS))
def test_restart_under_a_client_loop_fails_no_request(spawn: Spawn, engine: str) -> None:
    """SIGHUP re-executes the process; its socket stays open, so no request fails."""
    child, port = serve(spawn, engine)
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    warmed_up, done = threading.Event(), threading.Event()
    restarted = threading.Event()
    after_restart = 0

    def client() -> None:
        nonlocal after_restart
        for _ in range(1000):
            if done.is_set():
                return
            try:
                outcome = f"status {get(port)[0]}"
            except Exception as exc:
                outcome = type(exc).__name__
            with lock:
                outcomes[outcome] += 1
                if outcomes["status 200"] >= 100:
                    warmed_up.set()
                if restarted.is_set():
                    after_restart += 1
                    if after_restart >= 200:
                        done.set()

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        assert warmed_up.wait(WAIT)
        child.signal(signal.SIGHUP)
        # The new image adopted the same socket: binding port 0 again would
        # have given another port.
        expect(child, f"{engine} serving on http://127.0.0.1:{port}")
        restarted.set()
    finally:
        for thread in threads:
            thread.join(WAIT)
    assert set(outcomes) == {"status 200"}, outcomes
    child.signal(signal.SIGTERM)
    expect(child, "exited 0")
    assert child.wait() == 0


def test_address_in_use_is_one_line_and_nonzero_exit() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        spec = f"127.0.0.1:{taken.getsockname()[1]}"
        done = run_sitebus("serve", "hello_app:app", "--bind", spec)
    assert done.returncode == 1
    assert done.stderr == f'sitebus: error: Cannot bind "{spec}": address already in use\n'


def test_privileged_port_as_nobody_is_one_line_and_nonzero_exit(
    spawn: Spawn, tmp_path: Path
) -> None:
    """A child that dropped to nobody cannot bind port 80: it says so in one line."""
    child = spawn(
        [str(CHILDREN / "serve_as_nobody.py"), "hello_app:app", "--bind", "127.0.0.1:80"],
        cwd=CHILDREN,
    )
    assert child.wait() == 1, child.output()
    assert child.stderr() == (
        'sitebus: error: Cannot bind "127.0.0.1:80": permission denied '
        "(a port below 1024 needs root or CAP_NET_BIND_SERVICE)\n"
    )


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("hello_app", 'Import string "hello_app" must be in format "<module>:<attribute>".'),
        ("no_such_module:app", 'Could not import module "no_such_module"'),
        ("hello_app:nope", 'Attribute "nope" not found in module "hello_app".'),
    ],
)
def test_unusable_app_is_one_line_and_nonzero_exit(spec: str, expected: str) -> None:
    done = run_sitebus("serve", spec, "--bind", "127.0.0.1:0")
    assert done.returncode == 1
    assert done.stderr.startswith(f"sitebus: error: {expected}"), done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr


def test_serve_adopts_an_inherited_descriptor(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        fd = listener.fileno()
        with open(tmp_path / "err", "wb") as err:
            child = subprocess.Popen(
                [sys.executable, "-m", "sitebus", "serve", "hello_app:app", "--bind", f"fd://{fd}"],
                cwd=CHILDREN,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                pass_fds=(fd,),
            )
        try:
            # The socket listens already: the request waits in its queue until
            # the child serves it.
            status, body = get(listener.getsockname()[1])
            assert status == 200 and body == f"hello {child.pid}".encode()
            child.send_signal(signal.SIGTERM)
            assert child.wait(WAIT) == 0, (tmp_path / "err").read_text()
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(WAIT)
    assert os.path.exists(tmp_path / "err")


def test_restart_keeps_the_unix_socket_file_and_removes_it_at_exit(
    spawn: Spawn, tmp_path: Path
) -> None:
    path = tmp_path / "site.sock"
    child, port = serve(spawn, "cheroot", "--bind", f"unix:{path}")
    expect(child, f"cheroot serving on http+unix://{path}")
    inode = path.stat().st_ino
    assert get(str(path))[0] == 200
    child.signal(signal.SIGHUP)
    expect(child, f"cheroot serving on http://127.0.0.1:{port}")
    expect(child, f"cheroot serving on http+unix://{path}")
    assert path.stat().st_ino == inode, "the new image adopted the socket, it did not bind again"
    assert get(str(path))[0] == 200
    child.signal(signal.SIGTERM)
    expect(child, "exited 0")
    assert child.wait() == 0
    assert not path.exists()


def test_an_asgi_app_on_a_wsgi_engine_is_one_line() -> None:
    done = run_sitebus("serve", "hello_app:asgi", "--engine", "waitress", "--bind", "127.0.0.1:0")
    assert done.returncode == 1
    assert done.stderr.startswith("sitebus: error: The waitress engine serves WSGI apps")
    assert len(done.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--threads", "0"], "argument --threads: '0' is not a whole number of at least 1"),
        (["--backlog", "-5"], "argument --backlog: '-5' is not a whole number from 1 to 65535"),
        (["--graceful-timeout", "-1"], "'-1' is not a number of seconds from 0 to 86400"),
        (
            ["--graceful-timeout", "1e10"],
            "argument --graceful-timeout: '1e10' is not a number of seconds from 0 to 86400",
        ),
        (
            ["--backlog", "99999999999999999999"],
            "argument --backlog: '99999999999999999999' is not a whole number from 1 to 65535",
        ),
        (["--unix-mode", "9z"], "'9z' is not octal permission bits from 0 to 777, such as 660"),
        (
            ["--unix-mode", "7777"],
            "argument --unix-mode: '7777' is not octal permission bits from 0 to 777",
        ),
    ],
)
def test_bad_option_values_are_one_usage_line(option: list[str], message: str) -> None:
    done = run_sitebus("serve", "hello_app:app", *option)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_a_missing_dependency_of_the_app_is_named_with_its_traceback() -> None:
    """The module exists but imports one that does not: the error names that one."""
    done = run_sitebus("serve", "serve_dep_app:app", "--bind", "127.0.0.1:0")
    assert done.returncode == 1
    first, *rest = done.stderr.splitlines()
    assert first == (
        'sitebus: error: Module "serve_dep_app" of "serve_dep_app:app" could not import '
        "its dependency \"serve_dep\": No module named 'serve_dep'"
    )
    assert f'File "{CHILDREN / "serve_dep_app.py"}", line 7, in <module>' in done.stderr
    assert rest[0] == "Traceback (most recent call last):"


def test_a_wsgi_app_on_uvicorn_answers_through_the_adapter(spawn: Spawn) -> None:
    args = [str(CHILDREN / "serve_reporting.py"), "hello_app:app", "--bind", "127.0.0.1:0"]
    child = spawn([*args, "--engine", "uvicorn"], cwd=CHILDREN)
    port = int(expect(child, "uvicorn serving on http://127.0.0.1:").rsplit(":", 1)[1])
    assert get(port) == (200, f"hello {child.pid}".encode())
    child.signal(signal.SIGTERM)
    expect(child, "exited 0")
    assert child.wait() == 0


def test_a_failed_asgi_lifespan_startup_prints_its_cause_and_traceback() -> None:
    done = run_sitebus("serve", "hello_app:failing_startup", "--bind", "127.0.0.1:0")
    assert done.returncode == 1
    first, *rest = done.stderr.splitlines()
    assert first == (
        "sitebus: error: uvicorn did not start: the ASGI lifespan startup failed: "
        "RuntimeError: no database"
    )
    assert "in _connect_database" in done.stderr
    assert rest[-1] == "RuntimeError: no database", done.stderr


@pytest.mark.parametrize(
    "spec", ["127.0.0.1:²", "[::1]:٣", "fd://²", "fd://99999999999999999999", "unix:/tmp/a\0b"]
)
def test_an_address_it_does_not_accept_is_one_line(spec: str) -> None:
    """Non-ASCII digits, a descriptor no C int holds, a NUL in a path: one line, no traceback."""
    if "\0" in spec:  # no argument can carry a NUL: check the parser itself
        with pytest.raises(BindError, match="must be in format"):
            parse_address(spec)
        return
    done = run_sitebus("serve", "hello_app:app", "--bind", spec)
    assert done.returncode == 1
    assert done.stderr.startswith(f'sitebus: error: Address "{spec}" must be in format')
    assert len(done.stderr.splitlines()) == 1, done.stderr


def test_ctrl_c_twice_during_a_slow_asgi_lifespan_start_is_one_line(spawn: Spawn) -> None:
    """The second Ctrl-C aborts the start: it rolls back and prints one line, no traceback."""
    args = ["hello_app:slow_startup", "--bind", "127.0.0.1:0", "--engine", "uvicorn"]
    child = spawn([str(CHILDREN / "ctrl_c.py"), "serve", *args], cwd=CHILDREN)
    child.expect("lifespan startup")
    child.signal(signal.SIGINT)
    child.expect("interrupt")
    child.signal(signal.SIGINT)
    child.expect("interrupt")
    child.expect("exited 130")
    assert child.wait() == 130
    assert child.stderr() == (
        "sitebus: interrupted while starting; what had started was stopped\n"
    ), child.output()


def test_a_slow_start_says_what_it_is_starting(spawn: Spawn) -> None:
    """A slow app import is not silence: a line names the app, engine and address at once."""
    args = ["serve_slow_app:app", "--bind", "127.0.0.1:0", "--engine", "wsgiref"]
    child = spawn([str(CHILDREN / "serve_reporting.py"), *args], cwd=CHILDREN)
    child.expect("importing")
    child.expect("Starting serve_slow_app:app with wsgiref on 127.0.0.1:0")
    child.release()
    port = int(expect(child, "wsgiref serving on http://127.0.0.1:").rsplit(":", 1)[1])
    assert get(port) == (200, b"ok")
    child.signal(signal.SIGTERM)
    expect(child, "exited 0")
    assert child.wait() == 0
    assert child.stderr().count("Starting serve_slow_app:app") == 1


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (
            ["--threads", "4"],
            "sitebus: error: --threads does not apply to the wsgiref engine, "
            "which serves each connection in a thread of its own\n",
        ),
        (
            ["--certfile", __file__, "--keyfile", __file__],
            "sitebus: error: The wsgiref engine does not support TLS certificates\n",
        ),
    ],
)
def test_an_option_the_engine_cannot_honour_is_refused_in_one_line(
    option: list[str], message: str
) -> None:
    done = run_sitebus(
        "serve", "hello_app:app", "--engine", "wsgiref", "--bind", "127.0.0.1:0", *option
    )
    assert done.returncode == 1
    assert done.stderr == message
