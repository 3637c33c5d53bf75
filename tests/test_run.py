"""``sitebus run site.toml`` in real child processes, with real frameworks and real servers.

Each site file is written in ``tmp_path`` with ``bind = "127.0.0.1:0"``; the
port comes from the "Listening on" line the command prints. The apps live in
``tests/site_apps/`` (the children run there: the current directory is on the
import path), the reporting wrappers in ``tests/run_sites/``.
"""

from __future__ import annotations

import os
import pwd
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import WAIT, Child
from test_servers import get

Spawn = Callable[..., Child]
TESTS = Path(__file__).parent
SITE_APPS = TESTS / "site_apps"
RUN_SITES = TESTS / "run_sites"

FOUR_FRAMEWORKS = """
[site]
name = "four frameworks"

[[server]]
bind = "127.0.0.1:0"
{engine}

[[app]]
mount = "/"
wsgi = "plain_app:app"

[[app]]
mount = "/flask"
wsgi = "flask_app:app"

[[app]]
mount = "/django"
wsgi = "django_app:app"

[[app]]
mount = "/bottle"
wsgi = "bottle_app:app"
"""

STARLETTE = """
[[app]]
mount = "/star"
asgi = "starlette_app:app"
"""


def write_site(tmp_path: Path, text: str, name: str = "site.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def run_site(spawn: Spawn, site: Path, *extra: str, cwd: Path = SITE_APPS) -> tuple[Child, int]:
    """Start ``sitebus run site`` and wait until it listens; return the child and its port."""
    # The wrapper's folder is first on its import path, then the children's (conftest).
    child = spawn([str(RUN_SITES / "run_reporting.py"), str(site), *extra], cwd=cwd)
    return child, listening_port(child)


def listening_port(child: Child) -> int:
    line = expect(child, "Listening on http://127.0.0.1:")
    return int(line.rsplit(":", 1)[1])


def expect(child: Child, report: str) -> str:
    """The next report, skipping start summaries and the app's and autoreload's events."""
    line = child.next_report()
    while line.startswith(("Started ", "lifespan ", "Autoreload: ")) and not line.startswith(
        report
    ):
        line = child.next_report()
    assert line.startswith(report), f"expected {report!r}, got {line!r}\n{child.output()}"
    return line


def stop(child: Child, signum: int = signal.SIGTERM) -> None:
    child.signal(signum)
    expect(child, "exited 0")
    assert child.wait() == 0, child.output()


def run_sitebus(*args: str, cwd: Path = SITE_APPS) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sitebus`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "sitebus", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=WAIT,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.mark.parametrize(
    ("extra", "engine"),
    [("", "cheroot"), (STARLETTE, "uvicorn")],
    ids=["wsgi-only-cheroot", "with-asgi-uvicorn"],
)
def test_several_frameworks_answer_through_one_server(
    spawn: Spawn, tmp_path: Path, extra: str, engine: str
) -> None:
    """With no engine named: cheroot for WSGI apps alone, uvicorn once an ASGI app is mounted."""
    site = write_site(tmp_path, FOUR_FRAMEWORKS.format(engine="") + extra)
    child, port = run_site(spawn, site)
    assert f"{engine} serving on" in child.stderr()
    assert get(port, "/flask/hello") == (200, b"flask hello; script_name=/flask path=/hello")
    status, body = get(port, "/django/")
    assert status == 200 and b"/django/hello" in body, body
    status, body = get(port, "/bottle/")
    assert status == 200 and b"bottle" in body, body
    status, body = get(port, "/")
    assert status == 200 and body.startswith(b"plain script_name='' path_info='/'"), body
    if extra:
        assert get(port, "/star/hello") == (
            200,
            b"starlette hello; root_path=/star path=/star/hello",
        )
    assert get(port, "/flaskish")[1].startswith(b"plain "), "whole path segments only"
    stop(child)


def test_the_start_says_how_long_each_plugin_took_and_where_it_listens(
    spawn: Spawn, tmp_path: Path
) -> None:
    site = write_site(tmp_path, FOUR_FRAMEWORKS.format(engine='engine = "wsgiref"'))
    child = spawn(
        [str(RUN_SITES / "run_reporting.py"), str(site)],
        cwd=SITE_APPS,
    )
    started = child.next_report()
    assert started.startswith("Started four frameworks in "), child.output()
    for plugin in ("Server", "Sockets"):
        assert f"{plugin} " in started and " ms" in started, started
    port = int(expect(child, "Listening on http://127.0.0.1:").rsplit(":", 1)[1])
    assert get(port, "/flask/hello")[0] == 200
    stop(child)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_and_sigint_exit_zero(spawn: Spawn, tmp_path: Path, signum: int) -> None:
    site = write_site(tmp_path, FOUR_FRAMEWORKS.format(engine="") + STARLETTE)
    child, port = run_site(spawn, site)
    assert get(port, "/star/")[0] == 200
    stop(child, signum)


@pytest.mark.parametrize("asgi", [False, True], ids=["cheroot", "uvicorn"])
def test_sighup_restarts_and_no_request_fails(spawn: Spawn, tmp_path: Path, asgi: bool) -> None:
    """SIGHUP re-executes the site; its socket stays open, so a client loop sees no failure."""
    site = write_site(tmp_path, FOUR_FRAMEWORKS.format(engine="") + (STARLETTE if asgi else ""))
    child, port = run_site(spawn, site)
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    warmed_up, restarted, done = threading.Event(), threading.Event(), threading.Event()
    after = 0

    def client() -> None:
        nonlocal after
        while not done.is_set():
            try:
                outcome = f"status {get(port, '/flask/hello')[0]}"
            except Exception as exc:
                outcome = type(exc).__name__
            with lock:
                outcomes[outcome] += 1
                if outcomes["status 200"] >= 50:
                    warmed_up.set()
                if restarted.is_set():
                    after += 1
                    if after >= 50:
                        done.set()

    threads = [threading.Thread(target=client) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        assert warmed_up.wait(WAIT)
        child.signal(signal.SIGHUP)
        # The new image adopted the same socket: port 0 again would give another port.
        assert listening_port(child) == port
        restarted.set()
        assert done.wait(WAIT)
    finally:
        done.set()
        for thread in threads:
            thread.join(WAIT)
    assert set(outcomes) == {"status 200"}, outcomes
    stop(child)


def test_a_plugin_table_opens_its_database_at_start_and_closes_it_at_stop(
    spawn: Spawn, tmp_path: Path
) -> None:
    database = tmp_path / "site.db"
    site = write_site(
        tmp_path,
        FOUR_FRAMEWORKS.format(engine="")
        + f'\n[[plugin]]\nuse = "persistence:Persistence"\npath = "{database}"\n',
    )
    child = spawn(
        [str(RUN_SITES / "run_reporting.py"), str(site)],
        cwd=SITE_APPS,
    )
    # Priority 20: the database opens before the sockets are bound.
    assert child.next_report() == f"db open {database}", child.output()
    port = listening_port(child)
    assert get(port, "/flask/hello")[0] == 200
    # A restart closes it in the old image and opens it in the new one.
    child.signal(signal.SIGHUP)
    assert child.next_report() == "db closed", child.output()
    assert child.next_report() == f"db open {database}", child.output()
    assert listening_port(child) == port
    child.signal(signal.SIGTERM)
    assert child.next_report() == "db closed", child.output()
    expect(child, "exited 0")
    assert child.wait() == 0
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT count(*) FROM starts").fetchone() == (2,)
    db.close()


def test_import_strings_resolve_from_the_site_files_directory(spawn: Spawn, tmp_path: Path) -> None:
    """The site file names a module beside it; the command runs from another directory."""
    (tmp_path / "beside.py").write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'from beside the site file']\n"
    )
    site = write_site(
        tmp_path, '[[server]]\nbind = "127.0.0.1:0"\n\n[[app]]\nmount = "/"\nwsgi = "beside:app"\n'
    )
    child, port = run_site(spawn, site, cwd=TESTS)
    assert get(port, "/") == (200, b"from beside the site file")
    stop(child)


# -- bad input, named ---------------------------------------------------------

HALF_STARTED = """
[[server]]
bind = ["unix:{sock}", "{taken}"]

[[app]]
mount = "/"
wsgi = "hello_app:app"

[pidfile]
path = "{pidfile}"
"""


def test_an_address_in_use_is_one_line_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """No PID file, no Unix socket file and no process remain after the failed start."""
    sock, pidfile = tmp_path / "site.sock", tmp_path / "site.pid"
    with socket.create_server(("127.0.0.1", 0)) as taken:
        spec = f"127.0.0.1:{taken.getsockname()[1]}"
        site = write_site(tmp_path, HALF_STARTED.format(sock=sock, taken=spec, pidfile=pidfile))
        done = run_sitebus("run", str(site), cwd=TESTS / "children")
    assert done.returncode == 1
    assert done.stderr == f'sitebus: error: Cannot bind "{spec}": address already in use\n'
    assert not sock.exists() and not pidfile.exists()


def test_a_privileged_port_without_root_is_one_line(spawn: Spawn) -> None:
    """A child running as nobody cannot bind port 81: it says so in one line."""
    # The site file goes where nobody can read it, wherever the checkout sits
    # (a private directory, as a user's home or CI's may be).
    readable = Path(tempfile.mkdtemp(prefix="sitebus-nobody-"))
    try:
        readable.chmod(0o755)
        site = readable / "privileged.toml"
        shutil.copyfile(RUN_SITES / "privileged.toml", site)
        site.chmod(0o644)
        child = spawn([str(RUN_SITES / "run_as_nobody.py"), str(site)], cwd=TESTS / "children")
        assert child.wait() == 1, child.output()
    finally:
        shutil.rmtree(readable)
    assert child.stderr() == (
        'sitebus: error: Cannot bind "127.0.0.1:81": permission denied '
        "(a port below 1024 needs root or CAP_NET_BIND_SERVICE)\n"
    )


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ('[privileges]\nuser = "no-such-user-here"\n', "'no-such-user-here'"),
        ('[privileges]\ngroup = "no-such-group-here"\n', "'no-such-group-here'"),
    ],
    ids=["user", "group"],
)
def test_an_unknown_user_or_group_is_one_line(tmp_path: Path, table: str, named: str) -> None:
    site = write_site(tmp_path, '[[app]]\nmount = "/"\nwsgi = "hello_app:app"\n\n' + table)
    done = run_sitebus("run", str(site), cwd=TESTS / "children")
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("sitebus: error: ") and named in done.stderr, done.stderr


def test_a_missing_pid_file_directory_is_one_line_and_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    sock, pidfile = tmp_path / "site.sock", tmp_path / "nowhere" / "site.pid"
    site = write_site(
        tmp_path, HALF_STARTED.format(sock=sock, taken="127.0.0.1:0", pidfile=pidfile)
    )
    done = run_sitebus("run", str(site), cwd=TESTS / "children")
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert str(pidfile.parent) in done.stderr, done.stderr
    assert not sock.exists() and not pidfile.parent.exists()


def test_the_pidfile_flag_names_a_missing_directory_too(tmp_path: Path) -> None:
    pidfile = tmp_path / "nowhere" / "site.pid"
    site = write_site(tmp_path, '[[app]]\nmount = "/"\nwsgi = "hello_app:app"\n')
    done = run_sitebus(
        "run",
        str(site),
        "--pidfile",
        str(pidfile),
        "--set",
        "server.bind=127.0.0.1:0",
        cwd=TESTS / "children",
    )
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1 and str(pidfile.parent) in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("no_such_module:app", "there is no module named 'no_such_module'"),
        ("hello_app:nope", "module 'hello_app' has no attribute 'nope'"),
    ],
)
def test_an_unimportable_app_is_one_line(tmp_path: Path, spec: str, expected: str) -> None:
    site = write_site(tmp_path, f'[[app]]\nmount = "/"\nwsgi = "{spec}"\n')
    done = run_sitebus("run", str(site), cwd=TESTS / "children")
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"sitebus: error: {site}: app[0].wsgi: "), done.stderr
    assert expected in done.stderr, done.stderr


# -- the command line's flags -------------------------------------------------


@pytest.mark.parametrize("how", ["--reload", "[autoreload]"])
def test_reload_restarts_the_site_when_the_site_file_changes(
    spawn: Spawn, tmp_path: Path, how: str
) -> None:
    """Autoreload watches the site file itself: a new mount answers after the restart."""
    section = "\n[autoreload]\nenabled = true\n" if how == "[autoreload]" else ""
    site = write_site(tmp_path, FOUR_FRAMEWORKS.format(engine="") + section)
    child, port = run_site(spawn, site, *([how] if how == "--reload" else []))
    expect(child, "Autoreload: watching ")
    assert get(port, "/star/hello")[1].startswith(b"plain "), "no /star mount yet"
    site.write_text(site.read_text() + STARLETTE)
    assert listening_port(child) == port
    assert get(port, "/star/hello") == (200, b"starlette hello; root_path=/star path=/star/hello")
    stop(child)


def _wait_gone(pid: int) -> None:
    """Wait until process ``pid`` (not our child: a daemon) has ended."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        ready, _, _ = select.select([fd], [], [], WAIT)
        assert ready, f"process {pid} still running after {WAIT} s"
    finally:
        os.close(fd)


def test_daemonize_returns_once_the_site_serves_and_sigterm_removes_the_pid_file(
    tmp_path: Path,
) -> None:
    pidfile, sock = tmp_path / "site.pid", tmp_path / "site.sock"
    site = write_site(tmp_path, FOUR_FRAMEWORKS.format(engine=""))
    done = run_sitebus(
        "run",
        str(site),
        "--daemonize",
        "--pidfile",
        str(pidfile),
        "--set",
        f"server.bind=unix:{sock}",
    )
    assert done.returncode == 0, done.stderr
    pid = int(pidfile.read_text())
    try:
        assert get(str(sock), "/flask/hello")[0] == 200
    finally:
        os.kill(pid, signal.SIGTERM)
        _wait_gone(pid)
    assert not pidfile.exists()


def test_daemonize_with_the_address_in_use_fails_in_the_launcher_leaving_nothing(
    tmp_path: Path,
) -> None:
    pidfile = tmp_path / "site.pid"
    site = write_site(tmp_path, FOUR_FRAMEWORKS.format(engine=""))
    with socket.create_server(("127.0.0.1", 0)) as taken:
        spec = f"127.0.0.1:{taken.getsockname()[1]}"
        done = run_sitebus(
            "run",
            str(site),
            "--daemonize",
            "--pidfile",
            str(pidfile),
            "--set",
            f"server.bind={spec}",
        )
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert f'Cannot bind "{spec}": address already in use' in done.stderr
    assert not pidfile.exists()


def test_ctrl_c_twice_during_a_slow_start_exits_130_in_one_line(
    spawn: Spawn, tmp_path: Path
) -> None:
    """The second Ctrl-C aborts the start: it rolls back and prints one line, status 130."""
    app = '[[app]]\nmount = "/"\nasgi = "hello_app:slow_startup"\n'
    site = write_site(tmp_path, '[[server]]\nbind = "127.0.0.1:0"\n\n' + app)
    child = spawn([str(TESTS / "children" / "ctrl_c.py"), "run", str(site)], cwd=TESTS / "children")
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


TWO_SERVERS = """
[[server]]
bind = "127.0.0.1:0"

[[server]]
bind = ["127.0.0.1:0", "unix:{sock}"]

[[app]]
mount = "/"
asgi = "hello_app:asgi"

[[app]]
mount = "/flask"
wsgi = "flask_app:app"
"""


def test_every_server_serves_every_app_and_the_lifespan_runs_once(
    spawn: Spawn, tmp_path: Path
) -> None:
    """Two servers, three addresses: each answers for both apps, across a SIGHUP restart."""
    sock = tmp_path / "site.sock"
    site = write_site(tmp_path, TWO_SERVERS.format(sock=sock))
    child = spawn([str(RUN_SITES / "run_reporting.py"), str(site)], cwd=SITE_APPS)
    for generation in ("first", "after SIGHUP"):
        assert child.next_report() == "lifespan startup", generation
        line = expect(child, "Listening on ")
        urls = line.removeprefix("Listening on ").split(", ")
        assert len(urls) == 3 and urls[2] == f"http+unix://{sock}", line
        ports = [int(url.rsplit(":", 1)[1]) for url in urls[:2]]
        for where in (*ports, str(sock)):
            assert get(where, "/")[1].startswith(b"hello "), where
            assert get(where, "/flask/hello")[0] == 200, where
        if generation == "first":
            child.signal(signal.SIGHUP)
            assert child.next_report() == "lifespan shutdown"
    child.signal(signal.SIGTERM)
    assert child.next_report() == "lifespan shutdown"
    expect(child, "exited 0")
    assert not sock.exists()


def test_a_slow_import_says_what_the_site_is_starting(spawn: Spawn, tmp_path: Path) -> None:
    """A slow app import is not silence: one line names the site and its addresses at once."""
    site = write_site(
        tmp_path,
        '[site]\nname = "slow"\n\n[[server]]\nbind = "127.0.0.1:0"\n\n'
        '[[app]]\nmount = "/"\nwsgi = "serve_slow_app:app"\n',
    )
    child = spawn([str(RUN_SITES / "run_reporting.py"), str(site)], cwd=TESTS / "children")
    child.expect("importing")
    child.expect("Starting slow on 127.0.0.1:0 (importing its apps and plugins)")
    child.release()
    port = listening_port(child)
    assert get(port) == (200, b"ok")
    stop(child)
    assert child.stderr().count("Starting slow") == 1


# -- the assembler, in process ------------------------------------------------


def test_the_bus_bounds_leave_every_server_its_graceful_timeout(tmp_path: Path) -> None:
    """Servers stop one after another: the whole exit may take each one's graceful timeout."""
    from sitebus.site.assemble import site_bus
    from sitebus.site.config import load

    site = write_site(
        tmp_path,
        '[site]\ngraceful_timeout = 200\n\n[[server]]\n[[server]]\nbind = "127.0.0.1:0"\n\n'
        '[[app]]\nmount = "/"\nwsgi = "hello_app:app"\n',
    )
    bus = site_bus(load(site))
    assert bus.listener_timeout is not None and bus.listener_timeout > 200
    assert bus.exit_timeout is not None and bus.exit_timeout > 2 * 200


def test_a_tasks_section_puts_a_tasks_plugin_on_the_site(tmp_path: Path) -> None:
    from sitebus.plugins.tasks import Tasks
    from sitebus.site.assemble import assemble, site_bus
    from sitebus.site.config import check_imports, load

    site = write_site(
        tmp_path,
        '[[app]]\nmount = "/"\nwsgi = "beside:app"\n\n[tasks]\njoin_timeout = 2\n',
    )
    (tmp_path / "beside.py").write_text("def app(environ, start_response):\n    return []\n")
    path = list(sys.path)
    try:
        config = load(site)
        built = assemble(config, check_imports(config), site_bus(config))
    finally:
        sys.path[:] = path
        sys.modules.pop("beside", None)
    assert isinstance(built.tasks, Tasks) and built.tasks in built.plugins
    assert built.tasks.options.join_timeout == 2


def _free_privileged_port() -> int:
    """A port below 1024 that nothing listens on now (the test runs as root)."""
    for port in range(1023, 900, -1):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port from 901 to 1023")


@pytest.mark.skipif(os.geteuid() != 0, reason="binding a privileged port needs root")
def test_privileges_drop_after_a_privileged_port_is_bound(spawn: Spawn, tmp_path: Path) -> None:
    """[privileges] user = nobody: the port below 1024 is bound as root, requests run as nobody."""
    port = _free_privileged_port()
    site = write_site(
        tmp_path,
        f'[[server]]\nbind = "127.0.0.1:{port}"\n\n[[app]]\nmount = "/"\n'
        'wsgi = "hello_app:app"\n\n[privileges]\nuser = "nobody"\n',
    )
    child, listening = run_site(spawn, site, cwd=TESTS / "children")
    assert listening == port
    status, body = get(port)
    assert status == 200 and body == f"hello {child.pid}".encode()
    status_lines = Path(f"/proc/{child.pid}/status").read_text().splitlines()
    uids = next(line for line in status_lines if line.startswith("Uid:")).split()[1:]
    assert set(uids) == {str(pwd.getpwnam("nobody").pw_uid)}  # real, effective, saved, fs
    stop(child)


def test_the_log_section_writes_the_sites_log_to_its_file(spawn: Spawn, tmp_path: Path) -> None:
    """[log] with a relative file: the whole log lands there, though Django, imported
    after the log was set up, closes every logging handler as it configures its own."""
    site = write_site(
        tmp_path, FOUR_FRAMEWORKS.format(engine="") + '\n[log]\nfile = "site.log"\nstderr = true\n'
    )
    child, port = run_site(spawn, site)
    assert get(port, "/flask/hello")[0] == 200
    stop(child)
    lines = (tmp_path / "site.log").read_text().splitlines()
    assert any(line.endswith(f" Listening on http://127.0.0.1:{port}") for line in lines), lines
    assert lines[-1].endswith(" sitebus: Bus exiting"), lines


BROKEN = "raise RuntimeError('the database is not there')\n"
FIXED = (
    "def app(environ, start_response):\n"
    "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
    "    return [b'fixed']\n"
)


def test_with_reload_an_app_that_fails_to_import_serves_500_until_its_fix(
    spawn: Spawn, tmp_path: Path
) -> None:
    """Development: the error (with its traceback) is logged and served; the fix restarts."""
    source = tmp_path / "edited.py"
    source.write_text(BROKEN)
    site = write_site(
        tmp_path, '[[server]]\nbind = "127.0.0.1:0"\n\n[[app]]\nmount = "/"\nwsgi = "edited:app"\n'
    )
    child, port = run_site(spawn, site, "--reload")
    expect(child, "Autoreload: watching ")
    status, body = get(port)
    assert status == 500 and b"RuntimeError: the database is not there" in body, body
    assert f'File "{source}", line 1' in child.stderr()
    source.write_text(FIXED)
    assert listening_port(child) == port
    assert get(port) == (200, b"fixed")
    stop(child)


def test_without_reload_an_app_that_fails_to_import_ends_the_run(tmp_path: Path) -> None:
    (tmp_path / "edited.py").write_text(BROKEN)
    site = write_site(tmp_path, '[[app]]\nmount = "/"\nwsgi = "edited:app"\n')
    done = run_sitebus("run", str(site), "--set", "server.bind=127.0.0.1:0")
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "RuntimeError: the database is not there" in done.stderr


def test_with_reload_a_failed_asgi_lifespan_startup_serves_500(
    spawn: Spawn, tmp_path: Path
) -> None:
    site = write_site(
        tmp_path,
        '[[server]]\nbind = "127.0.0.1:0"\n\n[[app]]\nmount = "/star"\n'
        'asgi = "starlette_app:failing"\n',
    )
    child, port = run_site(spawn, site, "--reload")
    status, body = get(port, "/star/")
    assert status == 500 and b"the database is not there" in body, body
    stop(child)
