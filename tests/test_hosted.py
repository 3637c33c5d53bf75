"""Hosted mode under real hosts: gunicorn with two workers and a SIGHUP, and uvicorn."""

from __future__ import annotations

import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import CHILDREN, WAIT, Child
from sitebus.errors import ConfigError
from sitebus.hosted import asgi_app, wsgi_app

Spawn = Callable[..., Child]
SITE_APPS = Path(__file__).parent / "site_apps"

OFF_LINE = "stay off: the host process owns signals, daemon, PID file, privileges and reloading"


def write_site(tmp_path: Path, apps: str) -> Path:
    """A site with the database plugin, asking for what the host owns (which stays off)."""
    site = tmp_path / "site.toml"
    site.write_text(
        f"{apps}\n"
        f'[[plugin]]\nuse = "hosted_db:Database"\npath = "{tmp_path / "site.db"}"\n\n'
        '[signals]\n\n[pidfile]\npath = "site.pid"\n\n[autoreload]\nenabled = true\n'
    )
    return site


WSGI_APPS = """
[[app]]
mount = "/"
wsgi = "hosted_apps:pid_app"

[[app]]
mount = "/flask"
wsgi = "flask_app:app"
"""


def request(port: int, path: str) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        return finish(sock, path)


def finish(sock: socket.socket, path: str, sent: bool = False) -> tuple[int, bytes]:
    """Send (the rest of) a GET of ``path`` on ``sock``; the response's status and body."""
    if not sent:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: test\r\n".encode())
    sock.sendall(b"Connection: close\r\n\r\n")
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def both_workers(port: int) -> set[int]:
    """The PIDs of both sync workers, each made to answer a request.

    Two connections each carrying half a request: a sync worker holds the
    one it accepted until the request is whole, so the other worker takes the
    second. The halves are completed together; should one worker still have
    taken both in turn (it got there first), the pair is tried again.
    """
    pids: set[int] = set()
    for _ in range(20):
        socks = [socket.create_connection(("127.0.0.1", port), timeout=WAIT) for _ in range(2)]
        for sock in socks:
            sock.sendall(b"GET / HTTP/1.0\r\nHost: test\r\n")
        for sock in socks:
            with sock:
                status, body = finish(sock, "/", sent=True)
            assert status == 200, body
            pids.add(int(body.split()[1]))
        if len(pids) == 2:
            return pids
    raise AssertionError(f"20 pairs of requests reached only the workers {pids}")


def reports(child: Child, count: int) -> set[str]:
    return {child.next_report() for _ in range(count)}


def test_gunicorn_workers_each_start_and_stop_their_own_site_across_a_sighup(
    spawn: Spawn, tmp_path: Path
) -> None:
    """Under gunicorn with two workers, each worker starts the site on first use (its
    database opens there), a SIGHUP replaces the workers (each old one's site stops
    as it exits) and the site goes on answering; SIGTERM stops every worker's site."""
    site = write_site(tmp_path, WSGI_APPS)
    child = spawn(
        [
            "-m",
            "gunicorn",
            "--workers",
            "2",
            "--bind",
            "127.0.0.1:0",
            "--config",
            str(CHILDREN / "gunicorn_conf.py"),
            # The master imports the module (and the site's apps); the
            # workers, forked from it, must each start a site of their own.
            "--preload",
            "hosted_module:application",
        ],
        cwd=SITE_APPS,
        env={"SITEBUS_TEST_SITE": str(site)},
    )
    port = int(child.expect("ready").split()[1])
    workers = {int(line.split()[1]) for line in reports(child, 2)}
    pids = both_workers(port)
    assert pids == workers
    assert reports(child, 2) == {f"db open {pid}" for pid in pids}
    assert request(port, "/flask/hello") == (
        200,
        b"flask hello; script_name=/flask path=/hello",
    )
    assert not (tmp_path / "site.pid").exists()

    child.signal(signal.SIGHUP)
    seen = reports(child, 4)
    closed = {line for line in seen if line.startswith("db closed")}
    assert closed == {f"db closed {pid}" for pid in pids}, child.output()
    new = {int(line.split()[1]) for line in seen - closed}
    assert len(new) == 2 and not new & pids, seen

    assert both_workers(port) == new
    assert reports(child, 2) == {f"db open {pid}" for pid in new}
    assert request(port, "/flask/hello")[0] == 200

    child.signal(signal.SIGTERM)
    assert reports(child, 2) == {f"db closed {pid}" for pid in new}, child.output()
    assert child.wait() == 0
    # One line per site started (four), saying why the file's sections stay off.
    stderr = child.stderr()
    assert stderr.count(OFF_LINE) == 4, stderr
    assert "[signals], [pidfile], [autoreload] " + OFF_LINE in stderr


ASGI_APPS = """
[[app]]
mount = "/"
wsgi = "hosted_apps:pid_app"

[[app]]
mount = "/asgi"
asgi = "hosted_apps:lifespan_app"
"""


def test_uvicorn_lifespan_starts_and_stops_the_site_around_the_apps_lifespans(
    spawn: Spawn, tmp_path: Path
) -> None:
    """Under uvicorn, the lifespan startup starts the site (its database opens) and then
    the mounted ASGI app's lifespan; SIGTERM shuts the app down and then stops the site."""
    site = write_site(tmp_path, ASGI_APPS)
    child = spawn(
        [str(CHILDREN / "uvicorn_host.py")],
        cwd=SITE_APPS,
        env={"SITEBUS_TEST_SITE": str(site)},
    )
    port = int(child.expect("listening").split()[1])
    pid = child.pid
    assert child.next_report() == f"db open {pid}", child.output()
    assert child.next_report() == f"lifespan startup {pid}", child.output()
    assert request(port, "/asgi/x") == (200, f"asgi pid {pid} root_path /asgi".encode())
    assert request(port, "/") == (200, f"pid {pid} at ".encode())
    child.signal(signal.SIGTERM)
    assert child.next_report() == f"lifespan shutdown {pid}", child.output()
    assert child.next_report() == f"db closed {pid}", child.output()
    # uvicorn ends by raising the SIGTERM it caught again, once shut down.
    assert child.wait() == -signal.SIGTERM, child.output()
    assert "Application shutdown complete" in child.stderr()
    assert child.stderr().count(OFF_LINE) == 1, child.output()
    assert not (tmp_path / "site.pid").exists()


def test_wsgi_app_refuses_a_site_with_an_asgi_app(tmp_path: Path) -> None:
    """wsgi_app on a file mounting an ASGI app is a ConfigError naming the mount and asgi_app."""
    site = tmp_path / "site.toml"
    site.write_text('[[app]]\nmount = "/star"\nasgi = "starlette_app:app"\n')
    sys.path.insert(0, str(SITE_APPS))
    try:
        with pytest.raises(ConfigError, match=r"mounted at '/star' is an ASGI app.*asgi_app"):
            wsgi_app(site)
    finally:
        sys.path.remove(str(SITE_APPS))


def test_hosted_callables_start_nothing_until_first_use(tmp_path: Path) -> None:
    """Loading a site for a host imports its apps but starts no bus: that waits for first use."""
    site = tmp_path / "site.toml"
    site.write_text('[[app]]\nmount = "/"\nwsgi = "plain_app:app"\n')
    sys.path.insert(0, str(SITE_APPS))
    try:
        for hosted in (wsgi_app(site).hosted, asgi_app(site).hosted):
            assert hosted._site is None
            assert hosted.kind == "wsgi"
    finally:
        sys.path.remove(str(SITE_APPS))


def test_uvicorn_serves_a_wsgi_site_and_its_lifespan_starts_and_stops_the_site(
    spawn: Spawn, tmp_path: Path
) -> None:
    """asgi_app adapts a site of WSGI apps alone for uvicorn; the lifespan still starts
    the site (its database opens) and SIGTERM stops it."""
    site = write_site(tmp_path, WSGI_APPS)
    child = spawn(
        [str(CHILDREN / "uvicorn_host.py")],
        cwd=SITE_APPS,
        env={"SITEBUS_TEST_SITE": str(site)},
    )
    port = int(child.expect("listening").split()[1])
    assert child.next_report() == f"db open {child.pid}", child.output()
    assert request(port, "/") == (200, f"pid {child.pid} at ".encode())
    assert request(port, "/flask/hello") == (
        200,
        b"flask hello; script_name=/flask path=/hello",
    )
    child.signal(signal.SIGTERM)
    assert child.next_report() == f"db closed {child.pid}", child.output()
    assert child.wait() == -signal.SIGTERM, child.output()


def test_a_forked_child_starts_and_stops_a_site_of_its_own(spawn: Spawn, tmp_path: Path) -> None:
    """A process forked after its parent's site started gets its own site (its own
    database) on first use, and stops only that one when it exits; the parent's
    site goes on, and stops at the parent's exit."""
    site = write_site(tmp_path, WSGI_APPS)
    child = spawn([str(CHILDREN / "hosted_fork.py"), str(site)], cwd=SITE_APPS)
    parent = child.pid
    assert child.next_report() == f"db open {parent}", child.output()
    assert child.next_report() == f"before fork: pid {parent} at ", child.output()
    forked = int(child.next_report().split()[-1])
    assert forked != parent, child.output()
    assert child.next_report() == f"child: pid {forked} at ", child.output()
    assert child.next_report() == f"db closed {forked}", child.output()
    assert child.next_report() == f"parent: pid {parent} at  (child exited 0)", child.output()
    assert child.next_report() == f"db closed {parent}", child.output()
    assert child.wait() == 0
