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
