"""``sitebus check site.toml``, ``--help`` and ``--version``, run as real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import WAIT

TESTS = Path(__file__).parent
SITE_APPS = TESTS / "site_apps"


def sitebus(*args: str, cwd: Path = SITE_APPS) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sitebus`` with the test plugins (``tests/run_sites``) importable."""
    path = os.pathsep.join([str(TESTS / "run_sites"), str(TESTS / "children")])
    return subprocess.run(
        [sys.executable, "-m", "sitebus", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=WAIT,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_check_reports_servers_apps_and_plugins_and_starts_nothing(tmp_path: Path) -> None:
    database = tmp_path / "site.db"
    site = tmp_path / "site.toml"
    site.write_text(
        (SITE_APPS / "site.toml").read_text()
        + '\n[[server]]\nbind = ["127.0.0.1:0", "unix:site.sock"]\n'
        + f'\n[pidfile]\npath = "site.pid"\n\n[[plugin]]\nuse = "persistence:Persistence"\n'
        f'path = "{database}"\n'
    )
    done = sitebus("check", str(site))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{site}: ok",
        f"server[0]: uvicorn on 127.0.0.1:0, unix:{tmp_path}/site.sock",
        "app /: wsgi plain_app:app",
        "app /flask: wsgi flask_app:app",
        "app /django: wsgi django_app:app",
        "app /bottle: wsgi bottle_app:app",
        "app /star: asgi starlette_app:app",
        "plugins: signals, pidfile, persistence:Persistence",
    ]
    assert done.stderr == ""
    # Nothing started: no socket file, no PID file, no database.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site.toml"]


def test_check_applies_the_set_overrides(tmp_path: Path) -> None:
    done = sitebus("check", "site.toml", "--set", 'server.engine="cheroot"')
    assert done.returncode == 1
    assert done.stderr.startswith("sitebus: error: site.toml: server[0].engine: 'cheroot' ")
    assert len(done.stderr.splitlines()) == 1, done.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[[app]]\nmount = "/"\nwsgi = "no_such_module:app"\n', "app[0].wsgi: "),
        ('[[app]]\nmount = "/"\nwsgi = "plain_app:app"\n[[server]]\nbnid = "x"\n', "bind"),
        ('[[app]\nmount = "/"\n', "invalid TOML"),
        (
            '[[app]]\nmount = "/"\nwsgi = "plain_app:app"\n[[plugin]]\nuse = "plain_app:app"\n',
            "Plugin",
        ),
    ],
    ids=["unimportable-app", "misspelt-key", "toml-syntax", "not-a-plugin"],
)
def test_check_prints_the_problem_on_one_line_and_exits_1(
    tmp_path: Path, text: str, expected: str
) -> None:
    site = tmp_path / "site.toml"
    site.write_text(text)
    done = sitebus("check", str(site))
    assert done.returncode == 1
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("sitebus: error: ") and expected in done.stderr, done.stderr


@pytest.mark.parametrize("command", ["run", "check", "serve"])
def test_each_command_has_help(command: str) -> None:
    done = sitebus(command, "--help")
    assert done.returncode == 0
    assert done.stdout.startswith(f"usage: sitebus {command} ")


def test_version_prints_the_installed_version() -> None:
    from importlib import metadata

    done = sitebus("--version")
    assert (done.returncode, done.stdout) == (0, f"sitebus {metadata.version('sitebus')}\n")


def test_a_usage_error_exits_2() -> None:
    done = sitebus("run")
    assert done.returncode == 2
    assert "SITE_FILE" in done.stderr


def test_check_refuses_a_server_option_its_engine_cannot_honour(tmp_path: Path) -> None:
    """The servers are made, not started: TLS on wsgiref fails the check as it would the run."""
    site = tmp_path / "site.toml"
    site.write_text(
        f'[[server]]\nengine = "wsgiref"\ncertfile = "{site}"\nkeyfile = "{site}"\n\n'
        '[[app]]\nmount = "/"\nwsgi = "plain_app:app"\n'
    )
    done = sitebus("check", str(site))
    assert done.returncode == 1
    assert done.stderr == "sitebus: error: The wsgiref engine does not support TLS certificates\n"


def test_check_leaves_out_an_autoreload_section_that_is_not_enabled(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        '[[app]]\nmount = "/"\nwsgi = "plain_app:app"\n\n[autoreload]\nenabled = false\n'
    )
    done = sitebus("check", str(site))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "plugins: signals"
