"""The ``sitebus`` command line: the only place that turns errors into exit statuses.

Each subcommand is a function taking the parsed arguments and returning an
exit status. Subcommands:

    sitebus run site.toml [--set SECTION.KEY=VALUE ...] [--reload|--no-reload]
                [--daemonize] [--pidfile PATH] [--log-level LEVEL]
    sitebus check site.toml [--set SECTION.KEY=VALUE ...]
    sitebus serve pkg.module:app --bind HOST:PORT [--bind ...] [--engine NAME] [--reload]
                  [--health] [--drain-delay SECONDS] [--daemonize] [--pidfile PATH]
    sitebus status|stop|reload|graceful --pidfile PATH   (see ``sitebus.control``)

Exit statuses:

- 0: the site ran and was stopped by SIGTERM or SIGINT; ``check`` found no problem.
- 1: an error, one line on stderr: a ``SitebusError`` anywhere below (a bad
  site file, an app that does not import, an address in use, ...).
- 2: a usage error (argparse's own): an unknown option, a malformed value.
- 3: ``status`` found no running site (as LSB init scripts say).
- 130: interrupted (Ctrl-C) while starting; what had started was stopped.

As PID 1 in a container, ``run`` and ``serve`` fork first and the first
process stays as the container's init (``sitebus._init``), which exits with
the site's status, or 128 + N when signal N ended it.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import control
from ._argtypes import ranged
from ._init import fork_init
from ._startup import (
    Progress,
    app_traceback,
    command_log,
    log_app_failure,
    pause_collector,
    resume_collector,
    start_and_block,
)
from ._stderr_log import HeldStderr
from .bus import Bus
from .errors import AppError, ConfigError, ImportStringError, SitebusError, StartError
from .plugins.signals import Signals
from .servers import Sockets, SocketsOptions
from .servers._activation import under_systemd
from .servers._failed_app import FailedStartupServes500, unavailable_app
from .servers.base import ENGINES, GRACEFUL_TIMEOUT_MAX, ServerOptions, is_asgi, load_engine

if TYPE_CHECKING:
    from .plugins.health import HealthOptions

__all__ = ["load_app", "main", "report_errors", "serve_bus", "serve_sockets"]

_LOG_LEVELS = ("debug", "info", "warning", "error")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.command
    return report_errors(lambda: command(args))


def report_errors(command: Callable[[], int], prog: str = "sitebus") -> int:
    """Run ``command``; turn a ``SitebusError`` into one line on stderr and status 1.

    Ctrl-C while starting gives 130. A worker process (``sitebus.workers``)
    reports its errors the same way, as ``prog`` "sitebus worker PID".
    """
    try:
        return command()
    except KeyboardInterrupt:
        # Ctrl-C before the bus took signals over (a slow app import), or a
        # second one during a slow start: the start rolled back on its way here.
        print(f"{prog}: interrupted while starting; what had started was stopped", file=sys.stderr)
        return 130
    except SitebusError as exc:
        error: SitebusError = exc
        if isinstance(exc, StartError) and isinstance(exc.__cause__, SitebusError):
            error = exc.__cause__
        print(f"{prog}: error: {error}", file=sys.stderr)
        if isinstance(error, AppError) and error.__cause__ is not None:
            print(app_traceback(error.__cause__), file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sitebus",
        description="Run a Python web site on one process bus.",
        epilog="Exit status: 0 when the site was stopped by SIGTERM or SIGINT (or check found "
        "nothing wrong), 1 on an error (one line on stderr), 2 on a usage error, 130 when "
        "interrupted while starting.",
    )
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    _add_site_commands(commands)
    serve = commands.add_parser(
        "serve",
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
        choices=sorted(ENGINES),
        help="the HTTP server (default: cheroot for WSGI apps, uvicorn for ASGI apps)",
    )
    serve.add_argument(
        "--graceful-timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="how long a stop waits for requests in flight, 0 to 86400 (default 30)",
    )
    serve.add_argument(
        "--backlog",
        type=_backlog,
        metavar="N",
        help="the listen queue length, 1 to 65535, which also bounds how many connections "
        "wait across a restart (default 1024)",
    )
    serve.add_argument(
        "--threads",
        type=_positive_int,
        metavar="N",
        help="request threads, for cheroot, waitress, and uvicorn serving a WSGI app "
        "(default 10; wsgiref has a thread per connection and refuses it)",
    )
    serve.add_argument(
        "--certfile", help="TLS certificate (PEM), for cheroot and uvicorn (others refuse it)"
    )
    serve.add_argument(
        "--keyfile", help="TLS private key (PEM), for cheroot and uvicorn (others refuse it)"
    )
    serve.add_argument(
        "--name",
        type=_descriptor_name,
        help="the server's name: sockets systemd passes under this name "
        "(FileDescriptorName=) are adopted first",
    )
    serve.add_argument(
        "--unix-mode",
        type=_octal,
        metavar="OCTAL",
        help="permission bits of Unix socket files, 0 to 777, e.g. 660",
    )
    serve.add_argument(
        "--reload",
        action="store_true",
        help="restart with the new code when a source file of the app changes (development)",
    )
    serve.add_argument(
        "--health",
        action="store_true",
        help="answer liveness on /healthz and readiness on /readyz in front of the app; "
        "a stop first drains (see --drain-delay)",
    )
    serve.add_argument(
        "--drain-delay",
        type=_seconds,
        metavar="SECONDS",
        help="with --health (which it implies): seconds a stop keeps serving, /readyz "
        "answering 503, before it stops accepting, 0 to 86400 (default 5)",
    )
    serve.add_argument("--log-level", default="info", choices=_LOG_LEVELS)
    _add_worker_options(serve)
    control.add_process_options(serve)
    serve.set_defaults(command=_serve)
    control.add_commands(commands)
    return parser


class _Version(argparse.Action):
    """``--version``: looks the version up only when asked (importlib.metadata costs ~10 ms)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from importlib import metadata

        try:
            version = metadata.version("sitebus")
        except metadata.PackageNotFoundError:
            version = "(not installed)"
        print(f"{parser.prog} {version}")
        parser.exit()


def _add_site_commands(commands: Any) -> None:
    """``run`` and ``check``: the commands that read a site file."""
    run = commands.add_parser(
        "run",
        help="run the site a site file describes",
        description="Run the site that SITE_FILE describes: its servers, apps and plugins. "
        "SIGTERM and SIGINT stop it (exit 0); SIGHUP restarts it in place without "
        "refusing a connection.",
    )
    check = commands.add_parser(
        "check",
        help="check a site file: validate it, import what it names, start nothing",
        description="Validate SITE_FILE, import every app, middleware and plugin it names, "
        "and describe what would run, starting nothing. Exit 0 when all is well, else 1 "
        "with the problem on one line.",
    )
    for command in (run, check):
        command.add_argument("site_file", metavar="SITE_FILE", help="the site's TOML file")
        command.add_argument(
            "--set",
            action="append",
            default=[],
            dest="overrides",
            metavar="SECTION.KEY=VALUE",
            help="override a value of the file, such as server.bind=127.0.0.1:9000 "
            "(a TOML value, else a string); repeatable",
        )
    run.add_argument(
        "--reload",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="restart when a source file or the site file changes (default: the file's "
        "[autoreload] section)",
    )
    run.add_argument(
        "--daemonize",
        action="store_true",
        help="detach from the terminal, as the file's [daemon] section does",
    )
    run.add_argument("--pidfile", metavar="PATH", help="write the PID here, as [pidfile] path")
    run.add_argument(
        "--log-level",
        choices=_LOG_LEVELS,
        help="the log's level (default: the file's [log] level, else info)",
    )
    run.set_defaults(command=_run)
    check.set_defaults(command=_check)


def _add_worker_options(serve: argparse.ArgumentParser) -> None:
    workers = serve.add_argument_group(
        "worker processes",
        "With more than one worker, this process becomes a master: it binds the sockets "
        "and supervises the workers, each a fresh interpreter serving the app. SIGHUP "
        "replaces them one at a time; SIGTTIN and SIGTTOU add and remove one.",
    )
    workers.add_argument(
        "--workers",
        "-w",
        type=_workers,
        default=1,
        metavar="N",
        help='worker processes, 1 to 1024, or "auto" for one per CPU (default 1: the site '
        "runs in this process, without a master)",
    )
    workers.add_argument(
        "--worker-timeout",
        type=_timeout,
        default=30.0,
        metavar="SECONDS",
        help="kill and replace a worker silent for this long (default 30)",
    )
    workers.add_argument(
        "--max-requests",
        type=_count,
        default=0,
        metavar="N",
        help="replace a worker gracefully after N requests (default 0: never)",
    )
    workers.add_argument(
        "--max-requests-jitter",
        type=_count,
        default=0,
        metavar="N",
        help="add a random 0 to N to each worker's --max-requests (default 0)",
    )


def _run(args: argparse.Namespace) -> int:
    # As PID 1 (a container), the command becomes the site's init first: see _init.
    if (status := fork_init()) is not None:
        return status
    from .site.run import configure, run

    config = configure(
        args.site_file,
        args.overrides,
        reload=args.reload,
        daemonize=args.daemonize,
        pidfile=args.pidfile,
    )
    return run(config, log_level=args.log_level, overrides=args.overrides)


def _check(args: argparse.Namespace) -> int:
    from .site.run import check, configure

    for line in check(configure(args.site_file, args.overrides)):
        print(line)
    return 0


_positive_int = ranged(int, 1, None, "a whole number of at least 1")
_count = ranged(int, 0, None, "a whole number of at least 0")
_backlog = ranged(int, 1, 65535, "a whole number from 1 to 65535")
# A graceful timeout or a drain delay: 0 to a day.
_seconds = ranged(
    float, 0.0, GRACEFUL_TIMEOUT_MAX, f"a number of seconds from 0 to {GRACEFUL_TIMEOUT_MAX:g}"
)
_timeout = ranged(
    float, 0.1, GRACEFUL_TIMEOUT_MAX, f"a number of seconds from 0.1 to {GRACEFUL_TIMEOUT_MAX:g}"
)
_worker_count = ranged(int, 1, 1024, 'a number from 1 to 1024, or "auto"')


def _workers(text: str) -> int:
    """argparse type: a number of workers, 1 to 1024, or "auto" (one per CPU)."""
    if text == "auto":
        from .workers.master import cpu_count

        return cpu_count()
    return _worker_count(text)


def _descriptor_name(text: str) -> str:
    """argparse type: a name as systemd's ``FileDescriptorName=`` takes."""
    from .servers._activation import check_name

    problem = check_name(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{text!r} {problem}")
    return text


_octal = ranged(
    functools.partial(int, base=8), 0, 0o777, "octal permission bits from 0 to 777, such as 660"
)


def _serve(args: argparse.Namespace) -> int:
    if (status := fork_init()) is not None:  # as PID 1: see _run
        return status
    if args.workers == 1 and (args.max_requests or args.max_requests_jitter):
        raise ConfigError("--max-requests recycles worker processes: it needs --workers above 1")
    health = None
    if args.health or args.drain_delay is not None:
        from .plugins.health import HealthOptions

        health = HealthOptions()
        if args.drain_delay is not None:
            health = health.replace(drain_delay=args.drain_delay)
    if args.workers > 1:
        from .workers.serve import serve_workers

        return serve_workers(args, health)
    bus = serve_bus(args, health)
    level = logging.getLevelNamesMapping()[args.log_level.upper()]
    logs, stderr = command_log(bus, level)
    progress = _Progress(args)
    try:
        return _serve_on(bus, stderr, args, progress, health)
    finally:
        progress.cancel()
        logs.unsubscribe()


def serve_bus(
    args: argparse.Namespace, health: HealthOptions | None, bus_class: type[Bus] = Bus
) -> Bus:
    """The bus of ``sitebus serve`` (or of its workers' master, a ``bus_class``).

    A stop may drain and then take the whole graceful timeout: named in the
    log only past that, and the process ended (exit_timeout) only well after.
    """
    drain = 0.0 if health is None else health.drain_delay
    return bus_class(
        listener_timeout=max(drain, args.graceful_timeout) + 30.0,
        exit_timeout=drain + args.graceful_timeout + 60.0,
    )


def serve_sockets(bus: Bus, args: argparse.Namespace) -> Sockets:
    """The ``Sockets`` plugin of ``sitebus serve``'s options."""
    return Sockets(
        bus,
        SocketsOptions(
            binds=tuple(args.bind or ["127.0.0.1:8080"]),
            unix_mode=args.unix_mode,
            backlog=args.backlog or SocketsOptions.backlog,
            name=args.name or "",
        ),
    )


class _Progress:
    """Says, if the start is still under way after ``SLOW_START`` seconds, what it starts.

    The app, the engine once it is known, and the addresses; written at once
    even while the log is held back.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.app: str = args.app
        self.binds: list[str] = args.bind or ["127.0.0.1:8080"]
        self.engine: str | None = args.engine
        # No timer thread when daemonizing: the daemon plugin refuses to fork
        # while another thread runs.
        self._progress = None if args.daemonize else Progress(self._message)

    def _message(self) -> str:
        engine = f" with {self.engine}" if self.engine else ""
        doing = "" if self.engine else " (importing the app)"
        return f"Starting {self.app}{engine} on {', '.join(self.binds)}{doing}"

    def cancel(self) -> None:
        """The start is over, whichever way it went: say nothing more."""
        if self._progress is not None:
            self._progress.cancel()


def _serve_on(
    bus: Bus,
    stderr: HeldStderr,
    args: argparse.Namespace,
    progress: _Progress,
    health_options: HealthOptions | None,
) -> int:
    thresholds = pause_collector()
    failed: AppError | None = None
    try:
        try:
            app = load_app(args.app)
        except AppError as exc:
            if not args.reload:
                raise
            # Development: serve a 500 and watch the failed files until they are fixed.
            app, failed = unavailable_app(exc), exc
        if args.reload and is_asgi(app):
            # The same for a failed ASGI lifespan startup: log it, serve a 500.
            app = FailedStartupServes500(app, functools.partial(log_app_failure, bus))
        progress.engine = args.engine or ("uvicorn" if is_asgi(app) else "cheroot")
        engine = load_engine(progress.engine)
    finally:
        resume_collector(thresholds)
    if args.threads is not None and not engine.pools_threads:
        raise ConfigError(
            f"--threads does not apply to the {engine.engine} engine, "
            "which serves each connection in a thread of its own"
        )
    sockets = serve_sockets(bus, args)
    options = ServerOptions(
        graceful_timeout=args.graceful_timeout,
        threads=args.threads or ServerOptions.threads,
        certfile=args.certfile,
        keyfile=args.keyfile,
    )
    if health_options is not None:
        from .plugins.health import Health

        health = Health(bus, health_options)
        app = health.asgi(app) if is_asgi(app) else health.wsgi(app)
        health.subscribe()
    server = engine(bus, app, sockets, options)
    sockets.subscribe()
    server.subscribe()
    if args.reload:
        from .plugins.autoreload import Autoreload, AutoreloadOptions

        watch = [] if failed is None else log_app_failure(bus, failed)
        Autoreload(bus, AutoreloadOptions(paths=tuple(watch))).subscribe()
    control.subscribe_process_plugins(bus, daemonize=args.daemonize, pidfile=args.pidfile)
    if under_systemd():
        from .plugins.systemd import Systemd

        Systemd(bus).subscribe()
    signals = Signals(bus)
    signals.subscribe()
    try:
        # A StartError, or Ctrl-C twice, reaches main(), which prints the one line.
        return start_and_block(bus, stderr, over=progress.cancel, started=lambda: None)
    finally:
        signals.unsubscribe()


def load_app(spec: str) -> Any:
    """Resolve ``"pkg.module:attr"``, the current directory first on ``sys.path``.

    Like gunicorn and uvicorn: a site is usually started from its own folder.
    Raises ``ImportStringError`` when ``spec`` is malformed or names no
    module, and ``AppError`` when the module's own code fails (its exception
    is ``__cause__``) or lacks the attribute.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ImportStringError(f'Import string "{spec}" must be in format "<module>:<attribute>".')
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == module_name or module_name.startswith(f"{missing}."):
            raise ImportStringError(
                f'Could not import module "{module_name}" of "{spec}": no such module'
            ) from exc
        raise AppError(
            f'Module "{module_name}" of "{spec}" could not import its dependency "{missing}": {exc}'
        ) from exc
    except Exception as exc:
        raise AppError(f'Error importing "{spec}": {type(exc).__name__}: {exc}') from exc
    app: Any = module
    for part in attr.split("."):
        try:
            app = getattr(app, part)
        except AttributeError:
            raise AppError(f'Attribute "{attr}" not found in module "{module_name}".') from None
    if not callable(app):
        raise AppError(f'"{spec}" is not callable: it is a {type(app).__name__}.')
    return app
