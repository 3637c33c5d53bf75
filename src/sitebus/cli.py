"""The ``sitebus`` command line: the only place that turns errors into exit statuses.

Each subcommand is a function taking the parsed arguments and returning an
exit status; a ``SitebusError`` anywhere below becomes one line on stderr and
status 1, and a usage error status 2 (argparse's own). Subcommands:

    sitebus serve pkg.module:app --bind HOST:PORT [--bind ...] [--engine NAME] [--reload]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Callable, Sequence

from ._stderr_log import LEVELS, StderrLog
from .bus import Bus
from .errors import ImportStringError, SitebusError, StartError
from .plugins.signals import Signals

TYPE_CHECKING = False  # typing is not imported at run time: see bus.py
if TYPE_CHECKING:
    from typing import Any

__all__ = ["load_app", "main"]

_ENGINE_NAMES = ("cheroot", "uvicorn", "waitress", "wsgiref")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.command
    try:
        return command(args)
    except StartError as exc:
        cause = exc.__cause__
        message = str(cause) if isinstance(cause, SitebusError) else str(exc)
        print(f"sitebus: error: {message}", file=sys.stderr)
        return 1
    except SitebusError as exc:
        print(f"sitebus: error: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sitebus",
        description="Run a Python web site on one process bus.",
        formatter_class=_HelpFormatter,
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        formatter_class=_HelpFormatter,
        help="serve one WSGI or ASGI app",
        description="Serve one WSGI or ASGI app. SIGTERM and SIGINT stop it (exit 0); "
        "SIGHUP restarts it in place without refusing a connection.",
    )
    serve.add_argument("app", help='the app as an import string, "pkg.module:app"')
    serve.add_argument(
        "--bind",
        "-b",
        action="append",
        metavar="ADDRESS",
        help='"HOST:PORT", "[IPV6]:PORT", "unix:/PATH" or "fd://N"; repeatable '
        "(default 127.0.0.1:8080)",
    )
    serve.add_argument(
        "--engine",
        choices=_ENGINE_NAMES,
        help="the HTTP server (default: cheroot for WSGI apps, uvicorn for ASGI apps)",
    )
    serve.add_argument(
        "--graceful-timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="how long a stop waits for requests in flight (default 30)",
    )
    serve.add_argument(
        "--backlog",
        type=_positive_int,
        metavar="N",
        help="the listen queue length, which also bounds how many connections wait "
        "across a restart (default 1024)",
    )
    serve.add_argument(
        "--threads",
        type=_positive_int,
        default=10,
        help="request threads, for cheroot and waitress",
    )
    serve.add_argument("--certfile", help="TLS certificate (PEM), for cheroot")
    serve.add_argument("--keyfile", help="TLS private key (PEM), for cheroot")
    serve.add_argument(
        "--unix-mode",
        type=_octal,
        metavar="OCTAL",
        help="permission bits of Unix socket files, e.g. 660",
    )
    serve.add_argument(
        "--reload",
        action="store_true",
        help="restart with the new code when a source file of the app changes (development)",
    )
    serve.add_argument("--log-level", default="info", choices=tuple(LEVELS))
    serve.set_defaults(command=_serve)
    return parser


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, told the terminal width instead of asking shutil.

    argparse makes a formatter for every ``add_argument`` call to check it,
    and the stock one imports shutil (and zlib, bz2 and lzma with it) only to
    read the width: 3 ms of every start, paid again at each in-place restart.
    """

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_terminal_columns() - 2)


def _terminal_columns() -> int:
    """``$COLUMNS``, else the width of the terminal on standard output, else 80."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        return os.get_terminal_size(1).columns or 80
    except OSError:
        return 80


def _positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (names itself in the usage error)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _seconds(text: str) -> float:
    """argparse type: a number of seconds, zero or more."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return value


def _octal(text: str) -> int:
    """argparse type: permission bits written in octal, such as 660."""
    try:
        value = int(text, 8)
    except ValueError:
        value = -1
    if not 0 <= value <= 0o7777:
        raise argparse.ArgumentTypeError(f"{text!r} is not octal permission bits such as 660")
    return value


def _serve(args: argparse.Namespace) -> int:
    # Imported here: the servers package is not needed by the other commands.
    from .servers import Sockets, SocketsOptions
    from .servers.base import ServerOptions, is_asgi, load_engine

    # Debug shows everything as it happens; otherwise a start that fails
    # prints one line (its error) rather than the rollback's log.
    log = StderrLog(args.log_level, hold=args.log_level != "debug")
    log.take_stdlib_records()  # the engine's and the app's logging, once loaded
    thresholds = _pause_collector()
    try:
        app = load_app(args.app)
        engine = load_engine(args.engine or ("uvicorn" if is_asgi(app) else "cheroot"))
    finally:
        _resume_collector(thresholds)
    # The stop of the server waits up to the graceful timeout: the bound on each
    # stop listener (60 s by default) must not cut it short.
    bus = Bus(listener_timeout=args.graceful_timeout + 30.0, logger=None)
    bus.subscribe("log", log.bus_message)
    sockets = Sockets(
        bus,
        SocketsOptions(
            binds=tuple(args.bind or ["127.0.0.1:8080"]),
            unix_mode=args.unix_mode,
            backlog=args.backlog or SocketsOptions.backlog,
        ),
    )
    options = ServerOptions(
        graceful_timeout=args.graceful_timeout,
        threads=args.threads,
        certfile=args.certfile,
        keyfile=args.keyfile,
    )
    server = engine(bus, app, sockets, options)
    sockets.subscribe()
    server.subscribe()
    if args.reload:
        from .plugins.autoreload import Autoreload

        Autoreload(bus).subscribe()
    signals = Signals(bus)
    signals.subscribe()
    try:
        try:
            bus.start()
        except StartError:
            log.finish(show=False)  # main() prints the one line that says it all
            raise
        log.finish(show=True)
        return bus.block()
    finally:
        signals.unsubscribe()


def _pause_collector() -> tuple[int, int, int]:
    """Hold the cyclic garbage collector back while the app and the engine are imported.

    Importing them builds tens of thousands of objects that live as long as
    the process, and the collector scans the pile again and again as it
    grows: about 3% of a start (and of an in-place restart) on the reference
    machine. Returns the thresholds that ``_resume_collector`` puts back.
    """
    thresholds = gc.get_threshold()
    gc.set_threshold(0)  # no automatic collection; gc.collect() still works
    return thresholds


def _resume_collector(thresholds: tuple[int, int, int]) -> None:
    """Freeze what the imports built, then let the collector run again.

    Frozen objects are out of the collector's sight for good, as the gc
    module's documentation suggests for a server's start-up heap: no pause to
    scan them now, and none in any later full collection either. The price is
    that a reference cycle that became garbage during the imports is never
    freed. An app that set thresholds of its own meanwhile keeps them.
    """
    if gc.get_threshold()[0] == 0:
        gc.freeze()
        gc.set_threshold(*thresholds)


def load_app(spec: str) -> Any:
    """Resolve ``"pkg.module:attr"``, the current directory first on ``sys.path``.

    Like gunicorn and uvicorn: a site is usually started from its own folder.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ImportStringError(f'Import string "{spec}" must be in format "<module>:<attribute>".')
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        __import__(module_name)  # importlib.import_module, without loading importlib
        module = sys.modules[module_name]
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise ImportStringError(
                f'Could not import module "{module_name}" of "{spec}": no such module'
            ) from exc
        raise ImportStringError(f'Error importing "{spec}": {exc}') from exc
    except Exception as exc:
        raise ImportStringError(f'Error importing "{spec}": {type(exc).__name__}: {exc}') from exc
    app: Any = module
    for part in attr.split("."):
        try:
            app = getattr(app, part)
        except AttributeError:
            raise ImportStringError(
                f'Attribute "{attr}" not found in module "{module_name}".'
            ) from None
    if not callable(app):
        raise ImportStringError(f'"{spec}" is not callable: it is a {type(app).__name__}.')
    return app
