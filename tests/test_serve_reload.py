"""``sitebus serve --reload``: an edit restarts the process with the new code."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from conftest import CHILDREN, Child
from test_servers import get

Spawn = Callable[..., Child]

APP = """
MESSAGE = b"{message}"


def app(environ, start_response):
    start_response("200 OK", [("Content-Length", str(len(MESSAGE)))])
    return [MESSAGE]
"""


def test_edit_restarts_with_new_code_and_a_syntax_error_keeps_serving(
    spawn: Spawn, tmp_path: Path
) -> None:
    source = tmp_path / "reload_app.py"
    source.write_text(APP.format(message="first"))
    args = [str(CHILDREN / "serve_reload_reporting.py"), "reload_app:app"]
    child = spawn([*args, "--bind", "127.0.0.1:0", "--engine", "wsgiref", "--reload"], cwd=tmp_path)
    pid, port = child.expect("serving").split()[1:]
    child.expect("watching")
    assert get(int(port)) == (200, b"first")

    source.write_text(APP.format(message="second") + "\ndef broken(:\n")
    child.expect("not restarting")
    assert get(int(port)) == (200, b"first"), "the old code keeps serving"

    source.write_text(APP.format(message="second"))
    child.expect("changed")
    again_pid, again_port = child.expect("serving").split()[1:]
    assert (again_pid, again_port) == (pid, port), "same process, same socket"
    child.expect("watching")
    assert get(int(port)) == (200, b"second")

    child.signal(signal.SIGTERM)
    child.expect("exited 0")
    assert child.wait() == 0


def test_an_import_error_keeps_watching_and_the_fix_serves_the_new_code(
    spawn: Spawn, tmp_path: Path
) -> None:
    """An edit that compiles but fails on import: 500 and its traceback, then the fix serves."""
    source = tmp_path / "reload_app.py"
    source.write_text(APP.format(message="first"))
    args = [str(CHILDREN / "serve_reload_reporting.py"), "reload_app:app"]
    child = spawn([*args, "--bind", "127.0.0.1:0", "--engine", "wsgiref", "--reload"], cwd=tmp_path)
    pid, port = child.expect("serving").split()[1:]
    child.expect("watching")

    source.write_text(APP.format(message="second") + "\nundefined_name\n")
    child.expect("changed")
    child.expect("app failed")
    assert child.expect("serving").split()[1:] == [pid, port], "same process, same socket"
    child.expect("watching")
    status, body = get(int(port))
    assert status == 500
    assert b"NameError: name 'undefined_name' is not defined" in body
    stderr = child.stderr()
    assert f'File "{source}", line 9, in <module>' in stderr, stderr
    assert "<frozen importlib" not in stderr and "import_module" not in stderr

    source.write_text(APP.format(message="third"))
    child.expect("changed")
    assert child.expect("serving").split()[1:] == [pid, port]
    child.expect("watching")
    assert get(int(port)) == (200, b"third")

    child.signal(signal.SIGTERM)
    child.expect("exited 0")
    assert child.wait() == 0


def test_a_broken_app_at_the_first_start_is_watched_too(spawn: Spawn, tmp_path: Path) -> None:
    """With --reload, an app whose first import fails serves 500 until it is fixed."""
    source = tmp_path / "reload_app.py"
    source.write_text("import no_such_dependency_of_the_app\n")
    args = [str(CHILDREN / "serve_reload_reporting.py"), "reload_app:app"]
    child = spawn([*args, "--bind", "127.0.0.1:0", "--engine", "wsgiref", "--reload"], cwd=tmp_path)
    child.expect("app failed")
    port = child.expect("serving").split()[2]
    child.expect("watching")
    assert get(int(port))[0] == 500
    assert 'could not import its dependency "no_such_dependency_of_the_app"' in child.stderr()

    source.write_text(APP.format(message="fixed"))
    child.expect("changed")
    child.expect("serving")
    child.expect("watching")
    assert get(int(port)) == (200, b"fixed")
    child.signal(signal.SIGTERM)
    child.expect("exited 0")
    assert child.wait() == 0


ASGI_APP = """
MESSAGE = b"{message}"


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        if {fail}:
            await send({{"type": "lifespan.startup.failed", "message": "no database"}})
            raise RuntimeError("no database")
        await send({{"type": "lifespan.startup.complete"}})
        await receive()
        await send({{"type": "lifespan.shutdown.complete"}})
        return
    await send({{"type": "http.response.start", "status": 200, "headers": []}})
    await send({{"type": "http.response.body", "body": MESSAGE}})
"""


def test_a_failing_asgi_lifespan_startup_keeps_watching(spawn: Spawn, tmp_path: Path) -> None:
    """An edit that makes the lifespan startup fail: its cause is logged, 500 until the fix."""
    source = tmp_path / "reload_asgi.py"
    source.write_text(ASGI_APP.format(message="first", fail=False))
    args = [str(CHILDREN / "serve_reload_reporting.py"), "reload_asgi:app"]
    child = spawn([*args, "--bind", "127.0.0.1:0", "--reload"], cwd=tmp_path)
    pid, port = child.expect("serving").split()[1:]
    child.expect("watching")
    assert get(int(port)) == (200, b"first")

    source.write_text(ASGI_APP.format(message="second", fail=True))
    child.expect("changed")
    child.expect("app failed")
    assert child.expect("serving").split()[1:] == [pid, port]
    child.expect("watching")
    assert get(int(port))[0] == 500
    stderr = child.stderr()
    assert "the ASGI lifespan startup failed: RuntimeError: no database" in stderr
    assert f'File "{source}", line 10, in app' in stderr, stderr

    source.write_text(ASGI_APP.format(message="third", fail=False))
    child.expect("changed")
    child.expect("serving")
    child.expect("watching")
    assert get(int(port)) == (200, b"third")
    child.signal(signal.SIGTERM)
    child.expect("exited 0")
    assert child.wait() == 0
