"""Every code block in README.md and docs/*.md runs here: an example that stops working fails.

Each fenced block is one test, named ``FILE:LINE``, checked by its language tag:

- ``python``: executed with Sybil, in a working directory of its own for each
  file. The blocks of one file share one namespace, in order, like a reader
  typing them into one session: a block may use what an earlier block of the
  same file defined. A block must leave the process as it found it (no
  thread, signal handler or descriptor left behind: ``process_left_as_found``).
  A block that calls ``block()`` is a whole program instead: it runs as a
  script in a child process, exactly as a reader would run it (with no
  logging configured, the bus's lines show on stderr); once its bus logged ``Bus started``,
  each ``... serving on http://...`` address it logged must answer a request,
  and then Ctrl-C (SIGINT) must end it with status 0. A block that names a
  fixed port fails: examples bind port 0, since a fixed port may be taken.
  A block whose first line is ``# file: NAME`` is a module for the reader to
  save: it is compiled and written to the file's working directory under that
  name (for the site files and commands after it), not executed.
- ``toml``: parsed with tomllib. A block whose first line is ``# file: NAME``
  is also written to the file's working directory under that name, for the
  python blocks after it.
- ``json``: each line parsed as one JSON document (JSON lines).
- ``sh``: each line is a command. ``sitebus serve ...`` and ``python -m
  sitebus serve ...`` run for real, in a copy of ``tests/docs_site`` (the
  sample package ``myapp``), with every TCP port replaced by 0 (the log says
  which port was given) and every Unix socket moved into that directory; the
  command must log ``Bus started``, answer on every address it serves (Unix
  sockets too), and exit 0 on SIGTERM. ``sitebus run SITE ...`` and
  ``sitebus check SITE ...`` (also after ``python -m``) run for real too, in a
  copy of the folder of the site file they name (looked up in the file's
  working directory, then in the checkout), with ``tests/docs_site`` laid
  over it, every server's TCP port replaced by 0 with ``--set server[N].bind``
  and absolute paths of Unix sockets and ``--pidfile`` moved into the copy:
  ``run`` must log ``Bus started``, answer on every address it serves and
  exit 0 on SIGTERM; ``check`` must exit 0. ``pip install`` and ``make`` are not
  run (they would install from the network, or run this suite inside
  itself): a ``pip install`` must name this project (or ``.``, a checkout)
  and extras that pyproject.toml defines, a ``make`` a target that the
  Makefile defines. Any other command fails.
- ``console``: a terminal session; its ``$ `` lines are checked as ``sh``
  lines are, the other lines are output and not checked.
- ``text``: sample output or a diagram, shown and not run.

A block that cannot run here is preceded by ``<!-- skip: next "the reason" -->``
and reported as skipped with that reason. A block with no tag or another tag
fails ``test_every_block_has_a_known_language``.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import unittest
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sybil import Document, Example
from sybil.evaluators.python import PythonEvaluator
from sybil.parsers.markdown import CodeBlockParser, SkipParser

ROOT = Path(__file__).parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SAMPLE_SITE = Path(__file__).parent / "docs_site"
LANGUAGES = ("python", "toml", "json", "sh", "console", "text")
WAIT = 30.0  # generous bound for a program to start or stop


def _lines(lines: list[str]) -> Iterator[str]:
    """The commands of a shell block: one per line, comments dropped."""
    for line in lines:
        words = shlex.split(line, comments=True)
        if words:
            yield shlex.join(words)


# -- python ------------------------------------------------------------------

_run_in_namespace = PythonEvaluator()


def evaluate_python(example: Example) -> None:
    source = str(example.parsed)
    first = source.partition("\n")[0]
    if first.startswith("# file: "):
        name = first.removeprefix("# file: ").strip()
        compile(source, name, "exec")  # a module to save, checked; its users import it
        Path(name).write_text(source)
        return
    fixed = re.findall(r"[\"'][\w.\[\]:-]*:(?!0[\"'])\d+[\"']", str(example.parsed))
    assert not fixed, f"an example binds port 0, not {fixed}: a fixed port may be taken"
    if ".block()" in example.parsed:
        _run_program(example)
    else:
        _run_in_namespace(example)


class _Program:
    """A child process whose standard error the test reads line by line, with bounds."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.args = shlex.join(args)
        self.process = subprocess.Popen(
            args,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.lines: list[str] = []
        self._buffer = b""

    def wait_for(self, text: str) -> None:
        """Read standard error until a line contains ``text``; fail after ``WAIT`` s."""
        assert self.process.stderr is not None
        deadline = time.monotonic() + WAIT
        while not any(text in line for line in self.lines):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.process.stderr], [], [], max(0.0, left))
            chunk = os.read(self.process.stderr.fileno(), 65536) if ready else b""
            if not chunk:
                reason = "ended" if ready else f"said nothing more within {WAIT} s"
                raise AssertionError(f"{self.args} {reason} before {text!r}:\n{self.output()}")
            self._buffer += chunk
            *done, self._buffer = self._buffer.split(b"\n")
            self.lines += [line.decode(errors="replace") for line in done]

    def output(self) -> str:
        return "\n".join(self.lines) + self._buffer.decode(errors="replace")

    def answer_on_every_address(self) -> None:
        """GET / on each ``serving on http://...`` or ``http+unix://...`` address logged."""
        log = "\n".join(self.lines)
        for url in re.findall(r"http://\S+", log):
            with urllib.request.urlopen(url, timeout=WAIT) as response:
                assert response.status == 200, f"{url}: {response.status}\n{self.output()}"
        for path in re.findall(r"http\+unix://(\S+)", log):
            with socket.socket(socket.AF_UNIX) as client:
                client.settimeout(WAIT)
                client.connect(path)
                client.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
                status_line = client.makefile("rb").readline()
            assert status_line.split()[1:2] == [b"200"], f"{path}: {status_line!r}"

    def stop(self, signum: int) -> int:
        """Send ``signum``; return the exit status, with the rest of the output read."""
        assert self.process.stderr is not None
        self.process.send_signal(signum)
        try:
            status = self.process.wait(WAIT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.args} still running after {WAIT} s") from None
        self._buffer += self.process.stderr.read()
        return status

    def close(self) -> None:
        """Kill the child if it still runs, reap it, close the pipe."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(WAIT)
        assert self.process.stderr is not None
        self.process.stderr.close()


def _run_program(example: Example) -> None:
    script = Path(f"example_line_{example.line}.py")
    script.write_text(str(example.parsed))
    program = _Program([sys.executable, "-u", str(script)], Path.cwd())
    try:
        program.wait_for("Bus started")
        program.answer_on_every_address()
        status = program.stop(signal.SIGINT)
    finally:
        program.close()
    assert status == 0, f"Ctrl-C ended it with status {status}:\n{program.output()}"


# -- toml, json, text ----------------------------------------------------------


def evaluate_toml(example: Example) -> None:
    source = str(example.parsed)
    tomllib.loads(source)
    first = source.partition("\n")[0]
    if first.startswith("# file: "):
        Path(first.removeprefix("# file: ").strip()).write_text(source)


def evaluate_json(example: Example) -> None:
    for line in str(example.parsed).splitlines():
        json.loads(line)


def evaluate_text(example: Example) -> None:
    """Sample output and diagrams are shown, not run."""


# -- sh ------------------------------------------------------------------------


def evaluate_sh(example: Example) -> None:
    _check_commands(str(example.parsed).splitlines())


def _check_commands(lines: list[str]) -> None:
    for command in _lines(lines):
        words = shlex.split(command)
        if words[:1] == ["pip"]:
            _check_pip_install(words)
        elif words[:1] == ["make"]:
            _check_make(words)
        elif words[:2] == ["sitebus", "serve"]:
            _serve([str(Path(sys.executable).parent / "sitebus"), *words[1:]])
        elif words[:4] == ["python", "-m", "sitebus", "serve"]:
            _serve([sys.executable, *words[1:]])
        elif words[:1] == ["sitebus"] and words[1:2] in (["run"], ["check"]):
            _site_command([str(Path(sys.executable).parent / "sitebus")], words[1:])
        elif words[:3] == ["python", "-m", "sitebus"] and words[3:4] in (["run"], ["check"]):
            _site_command([sys.executable, "-m", "sitebus"], words[3:])
        else:
            raise AssertionError(f"no way to check this command here: {command!r}")


def evaluate_console(example: Example) -> None:
    """A terminal session: the ``$ `` lines are commands, checked as in ``sh``; the rest output."""
    commands = [line[2:] for line in str(example.parsed).splitlines() if line.startswith("$ ")]
    _check_commands(commands)


def _check_pip_install(words: list[str]) -> None:
    assert words[1] == "install", words
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in words[2:]:
        name, _, extras = requirement.partition("[")
        assert name in (".", project["name"]), f"{requirement!r} does not install this project"
        for extra in filter(None, extras.rstrip("]").split(",")):
            assert extra in project["optional-dependencies"], f"no extra {extra!r}"


def _check_make(words: list[str]) -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in words[1:]:
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"no target {target!r}"


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def _serve(command: list[str]) -> None:
    """Run a ``sitebus serve`` command on free ports in a copy of the sample site, then stop it."""
    site = Path.cwd() / f"site-{len(list(Path.cwd().iterdir()))}"
    shutil.copytree(SAMPLE_SITE, site)
    args, binds = [], 0
    for index, word in enumerate(command):
        if index and command[index - 1] in ("--bind", "-b"):
            binds += 1
            if word.startswith("unix:"):
                word = f"unix:{site / Path(word).name}"
            else:
                if word.startswith("[") and not _ipv6_loopback():
                    pytest.skip(f"{word}: this machine has no IPv6 loopback")
                word = re.sub(r":\d+$", ":0", word)
        args.append(word)
    if not binds:
        args += ["--bind", "127.0.0.1:0"]  # not the default 8080, which may be taken
    program = _Program(args, site)
    try:
        program.wait_for("Bus started")
        program.answer_on_every_address()
        status = program.stop(signal.SIGTERM)
    finally:
        program.close()
    assert status == 0, f"SIGTERM ended it with status {status}:\n{program.output()}"


_VALUED = ("--set", "--pidfile", "--log-level")  # options of run and check that take a value


def _site_command(program: list[str], words: list[str]) -> None:
    """Run ``sitebus run|check SITE ...`` in a copy of the site's folder, on free ports."""
    verb, *options = words
    assert "--daemonize" not in options, (
        'a --daemonize line cannot be checked here: mark its block <!-- skip: next "the reason" -->'
    )
    positions = [
        i
        for i, word in enumerate(options)
        if not word.startswith("-") and (i == 0 or options[i - 1] not in _VALUED)
    ]
    assert positions, f"sitebus {verb} names no site file: {shlex.join(words)!r}"
    named = options[positions[0]]
    found = next((p for p in (Path.cwd() / named, ROOT / named) if p.is_file()), None)
    assert found is not None, f"sitebus {verb}: no site file {named!r} here or in the checkout"
    copy = Path.cwd().parent / f"{Path.cwd().name}-site-{len(list(Path.cwd().parent.iterdir()))}"
    shutil.copytree(
        found.parent,
        copy,
        ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3", "*.pid", "*.sock"),
    )
    shutil.copytree(SAMPLE_SITE, copy, dirs_exist_ok=True)
    site_file = copy / found.name
    args = [*program, verb]
    for index, word in enumerate(options):
        if index == positions[0]:
            word = str(site_file)
        elif index and options[index - 1] == "--pidfile" and os.path.isabs(word):
            word = str(copy / Path(word).name)
        args.append(word)
    args += _free_ports(site_file, copy)
    if verb == "check":
        done = subprocess.run(
            args, cwd=copy, stdin=subprocess.DEVNULL, capture_output=True, timeout=WAIT
        )
        output = (done.stdout + done.stderr).decode(errors="replace")
        assert done.returncode == 0, f"{shlex.join(args)}: status {done.returncode}\n{output}"
        return
    program_run = _Program(args, copy)
    try:
        program_run.wait_for("Bus started")
        program_run.answer_on_every_address()
        status = program_run.stop(signal.SIGTERM)
    finally:
        program_run.close()
    assert status == 0, f"SIGTERM ended it with status {status}:\n{program_run.output()}"


def _free_ports(site_file: Path, copy: Path) -> list[str]:
    """``--set`` options giving every server of ``site_file`` its addresses on port 0."""
    servers = tomllib.loads(site_file.read_text()).get("server") or [{}]
    overrides = []
    for index, server in enumerate(servers):
        binds = server.get("bind", "127.0.0.1:8080")
        free = []
        for bind in [binds] if isinstance(binds, str) else binds:
            if bind.startswith("unix:") and os.path.isabs(bind.removeprefix("unix:")):
                bind = f"unix:{copy / Path(bind).name}"
            elif not bind.startswith(("unix:", "fd://")):
                if bind.startswith("[") and not _ipv6_loopback():
                    pytest.skip(f"{bind}: this machine has no IPv6 loopback")
                bind = re.sub(r":\d+$", ":0", bind)
            free.append(bind)
        overrides += ["--set", f"server[{index}].bind={json.dumps(free)}"]
    return overrides


# -- collection ----------------------------------------------------------------

PARSERS = [
    SkipParser(),
    CodeBlockParser("python", evaluate_python),
    CodeBlockParser("toml", evaluate_toml),
    CodeBlockParser("json", evaluate_json),
    CodeBlockParser("sh", evaluate_sh),
    CodeBlockParser("console", evaluate_console),
    CodeBlockParser("text", evaluate_text),
]


def _parse(path: Path) -> Document:
    document = Document.parse(str(path), *PARSERS)
    document.namespace["__name__"] = "docs_" + path.stem.lower()
    return document


DOCUMENTS = {path: _parse(path) for path in DOCS}
EXAMPLES = [
    pytest.param(path, example, id=f"{path.relative_to(ROOT)}:{example.line}")
    for path, document in DOCUMENTS.items()
    for example in document
]


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, Path]:
    """One working directory per documentation file, shared by its blocks."""
    return {path: tmp_path_factory.mktemp(path.stem) for path in DOCS}


@pytest.mark.parametrize(("path", "example"), EXAMPLES)
def test_doc_example_runs(
    path: Path, example: Example, workdirs: dict[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(workdirs[path])
    example.evaluate()


@pytest.mark.parametrize("path", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_block_has_a_known_language(path: Path) -> None:
    """A block this module would not check is an error, not a silent pass."""
    fence = re.compile(r"^(\s*)```(.*)$")
    inside, unknown = False, []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        match = fence.match(line)
        if match is None:
            continue
        if not inside and match.group(2).strip() not in LANGUAGES:
            unknown.append(f"line {number}: {match.group(2).strip() or '(no tag)'}")
        inside = not inside
    assert not unknown, f"blocks with a tag other than {LANGUAGES}: {unknown}"


@pytest.mark.parametrize(
    ("block", "error"),
    [
        ("```python\nundefined_name\n```", NameError),
        ('```python\nbinds = ("127.0.0.1:8080",)\n```', AssertionError),
        ("```toml\n[table\n```", tomllib.TOMLDecodeError),
        ("```sh\nmake no-such-target\n```", AssertionError),
        ("```sh\npip install '.[no-such-extra]'\n```", AssertionError),
        ("```sh\nrm -rf build\n```", AssertionError),
        ("```console\n$ sitebus serve no_such_module:app\n```", AssertionError),
        ("```sh\nsitebus check no-such-site.toml\n```", AssertionError),
        ("```sh\nsitebus run site.toml --daemonize\n```", AssertionError),
        ("```python\n# file: broken.py\ndef broken(:\n```", SyntaxError),
    ],
)
def test_a_broken_example_fails(
    block: str, error: type[Exception], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checks above really check: each of these blocks fails its test."""
    page = tmp_path / "page.md"
    page.write_text(f"A page.\n\n{block}\n")
    monkeypatch.chdir(tmp_path)
    (example,) = _parse(page)
    with pytest.raises(error):
        example.evaluate()


def test_a_skipped_example_says_why(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text('<!-- skip: next "needs root" -->\n```python\nraise SystemExit(1)\n```\n')
    skip, example = _parse(page)
    skip.evaluate()
    with pytest.raises(unittest.SkipTest, match="needs root"):
        example.evaluate()


def test_a_python_block_named_as_a_file_is_saved_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = tmp_path / "page.md"
    page.write_text("A page.\n\n```python\n# file: mod.py\nraise SystemExit(1)\n```\n")
    monkeypatch.chdir(tmp_path)
    (example,) = _parse(page)
    example.evaluate()
    assert (tmp_path / "mod.py").read_text() == "# file: mod.py\nraise SystemExit(1)\n"


def test_site_commands_get_every_server_on_free_ports(tmp_path: Path) -> None:
    """``sitebus run``'s servers move to port 0, absolute Unix sockets into the copy."""
    site = tmp_path / "site.toml"
    site.write_text(
        '[[server]]\nbind = ["127.0.0.1:8080", "unix:/run/shop.sock", "unix:rel.sock"]\n'
        '[[server]]\nbind = "localhost:9000"\n'
    )
    assert _free_ports(site, tmp_path) == [
        "--set",
        f'server[0].bind=["127.0.0.1:0", "unix:{tmp_path}/shop.sock", "unix:rel.sock"]',
        "--set",
        'server[1].bind=["localhost:0"]',
    ]
    site.write_text('[[app]]\nmount = "/"\nwsgi = "myapp:app"\n')  # the default server
    assert _free_ports(site, tmp_path) == ["--set", 'server[0].bind=["127.0.0.1:0"]']
