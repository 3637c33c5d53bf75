"""A worker: ``python -m sitebus.workers.worker``, started by a master, never by hand.

The worker takes its hand-over record (``_protocol``), then builds a bus of
its own with what the master leaves out: the servers on the master's
sockets, the apps, and the app plugins (a database plugin opens its
connection here, once per worker). It keeps none of the process-wide
plugins: no PID file, daemon, privileges, systemd or autoreload. Its signals:
SIGTERM stops it gracefully, SIGUSR1 publishes ``graceful`` (reopen logs);
SIGINT and SIGHUP are ignored, because a terminal sends them to the master's
whole process group and the master decides what they mean.

``MasterLink`` is its side of the control socket: ``ready`` once the bus is
started, a heartbeat that is sent only while the bus answers (a worker
whose main thread is wedged in a transition, or whose interpreter is stuck
holding the GIL, or that is stopped, falls silent and is killed by the
master), the requests counted for ``max_requests`` and ``sitebus status``,
the master's ``drain`` as the site begins to stop, which turns the worker's
readiness probe to 503 (with ``--health`` or ``[health]``; the master waits
the drain delay, the workers go on serving), and the master's death, seen as
end-of-file, which stops the worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import select
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from .._startup import (
    command_log,
    failed_sources,
    pause_collector,
    resume_collector,
    start_and_block,
)
from ..bus import Bus, State
from ..errors import AppError, BindError, ConfigError, ImportStringError
from ..plugin import Plugin, StartOrder, priority
from ..plugins.signals import Signals, SignalsOptions
from ..servers.base import ServerOptions, is_asgi, load_engine
from ..servers.sockets import Sockets, SocketsOptions, adopt
from . import _protocol

__all__ = ["WORKER_SIGNALS", "MasterLink", "WorkerSockets", "close_unclaimed", "main"]

WORKER_SIGNALS = SignalsOptions(actions={"SIGINT": "ignore", "SIGHUP": "ignore"})


class WorkerSockets(Sockets):
    """The master's listening sockets, adopted: this worker serves them and never owns them.

    ``handed`` is the master's ``(spec, descriptor)`` list, shared by every
    ``WorkerSockets`` of the worker; each claims the first entry of each of
    its addresses. A worker's stop only closes its descriptors: it neither
    holds off new connections (the socket is shared, and the other workers
    go on accepting) nor removes a Unix socket's file (the master's).
    """

    def __init__(
        self, bus: Bus, options: SocketsOptions | None, handed: list[tuple[str, int]]
    ) -> None:
        super().__init__(bus, options)
        self._handed = handed

    @priority(StartOrder.SOCKETS)
    def start(self) -> None:
        for address in self.addresses:
            for index, (spec, fd) in enumerate(self._handed):
                if spec == address.spec:
                    del self._handed[index]
                    listener = adopt(address, fd)
                    listener.unix_path = None  # the master's file: never removed here
                    self.listeners.append(listener)
                    break
            else:
                raise BindError(f'The master handed this worker no socket for "{address}"')

    @priority(StartOrder.SOCKETS)
    def stop(self) -> None:
        listeners, self.listeners = self.listeners, []
        for listener in listeners:
            listener.socket.close()

    def hold_off(self) -> None:
        """Nothing: holding off the shared socket would turn connections away from every worker."""

    def wait_drained(self, deadline: float) -> bool:
        return True


class MasterLink(Plugin):
    """The worker's side of the control socket; see the module docstring.

    ``begin()`` starts the heartbeat thread at once, before the app is
    imported: a master that dies during a slow import is noticed too.
    """

    def __init__(
        self,
        bus: Bus,
        control: socket.socket,
        heartbeat: float,
        max_requests: int = 0,
        *,
        watch_files: bool = False,
    ) -> None:
        super().__init__(bus)
        self.control = control
        self.heartbeat = heartbeat
        self.max_requests = max_requests
        self.watch_files = watch_files
        self._reported: set[str] = set()
        self._modules_seen = 0
        self._files_lock = threading.Lock()
        self.requests = 0
        self._count_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._said_stopping = False
        self._received = b""
        self.on_drain: Callable[[], None] | None = None  # the master's "drain", in this thread
        self._thread = threading.Thread(target=self._run, name="sitebus-worker-link", daemon=True)

    def begin(self) -> None:
        self._thread.start()

    def state(self, state: State) -> None:
        if state is State.STARTED:
            self.report_imported()  # before "ready": watched before the master's start ends
            self._send(_protocol.Message("ready"))
            self._beat()  # the status shows its memory at once, not a heartbeat later
        elif state in (State.STOPPING, State.EXITING) and not self._said_stopping:
            self._said_stopping = True
            self._send(_protocol.Message("stopping"))

    def counted(self, app: Callable[..., Any], uncounted: Iterable[str] = ()) -> Callable[..., Any]:
        """``app`` counting its requests (WSGI calls, ASGI http and websocket scopes).

        Requests for the ``uncounted`` paths (the health probes, which a
        balancer sends every few seconds) count neither for ``max_requests``
        nor in the status.
        """
        served = self._served
        skipped = frozenset(uncounted)
        if is_asgi(app):

            async def counted_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
                if scope["type"] != "lifespan" and scope.get("path") not in skipped:
                    served()
                await app(scope, receive, send)

            return counted_asgi

        def counted_wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            if environ.get("PATH_INFO") not in skipped:
                served()
            return app(environ, start_response)

        return counted_wsgi

    def report_imported(self) -> None:
        """Under autoreload, tell the master of each site file imported since last time."""
        if not self.watch_files or len(sys.modules) == self._modules_seen:
            return
        from ..plugins._sources import current_modules, module_files

        self._modules_seen = len(sys.modules)
        self.report_files(module_files(current_modules(), include_third_party=False))

    def report_files(self, files: Iterable[str]) -> None:
        """Under autoreload, have the master watch ``files`` (those not reported yet)."""
        if not self.watch_files:
            return
        with self._files_lock:
            new = {os.path.abspath(path) for path in files} - self._reported
            self._reported |= new
        for path in sorted(new):
            if "\n" not in path:
                self._send(_protocol.Message("watch", path=path))

    def _beat(self) -> None:
        with self._count_lock:
            requests = self.requests
        self._send(_protocol.Message("beat", requests, _protocol.read_rss()))

    def _served(self) -> None:
        with self._count_lock:
            self.requests += 1
            count = self.requests
        if count == self.max_requests:
            self.bus.log(f"Served {count} requests (max_requests): stopping to be replaced")
            self.bus.request_exit()

    def _send(self, message: _protocol.Message) -> None:
        # The master is gone when this fails: the link's thread sees it and stops the worker.
        with self._send_lock, contextlib.suppress(OSError):
            self.control.sendall(message.encode())

    def _run(self) -> None:
        while True:
            readable, _, _ = select.select([self.control], [], [], self.heartbeat)
            if readable:
                try:
                    data = self.control.recv(64)
                except OSError:
                    data = b""
                if not data:
                    self.bus.log("The master is gone: stopping", logging.WARNING)
                    self.bus.request_exit()
                    return
                self._received += data
                while b"\n" in self._received:
                    line, _, self._received = self._received.partition(b"\n")
                    if line + b"\n" == _protocol.DRAIN and self.on_drain is not None:
                        self.on_drain()
                continue
            # While started, beat only if no transition holds the bus: a worker
            # wedged there falls silent. Booting and stopping, the master keeps
            # other bounds, so a beat costs nothing and says "alive".
            if self.bus.state is State.STARTED and not self.bus.responsive(self.heartbeat):
                continue
            self._beat()
            if self.bus.state is State.STARTED:
                self.report_imported()  # modules imported late, by a request


def main() -> int:
    """Serve what the master's record says until stopped; return the exit status."""
    # Ctrl-C at the terminal reaches the whole group: the master alone decides
    # what it means, also while this worker still imports the app.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    record = _protocol.take_record()
    if record is None:
        print(
            "sitebus worker: error: not started by a sitebus master "
            f"(no valid {_protocol.ENV} record from the parent process)",
            file=sys.stderr,
        )
        return 2
    control = socket.socket(fileno=record["control"])
    control.set_inheritable(False)
    handed = [(str(spec), int(fd)) for spec, fd in record["sockets"]]
    site: dict[str, Any] = record["site"]
    limit = int(record.get("max_requests", 0))
    if limit:
        limit += random.randint(0, int(record.get("max_requests_jitter", 0)))
    bus = _worker_bus(float(site.get("graceful_timeout", 30.0)))
    link = MasterLink(
        bus, control, float(record["heartbeat"]), limit, watch_files=bool(record.get("watch"))
    )
    link.begin()
    from ..cli import report_errors

    kind = site.get("kind")
    if kind not in ("serve", "run"):
        print(f"sitebus worker: error: unknown site kind {kind!r}", file=sys.stderr)
        return 2
    build = _serve if kind == "serve" else _run

    def serve() -> int:
        try:
            return build(bus, site, handed, link)
        except (AppError, ImportStringError) as exc:
            # Under autoreload the fix is awaited in the files that failed,
            # which nobody imported: the master watches them from now on.
            link.report_imported()
            link.report_files(failed_sources(_root_cause(exc)))
            raise

    return report_errors(serve, f"sitebus worker {os.getpid()}")


def _root_cause(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _worker_bus(graceful_timeout: float) -> Bus:
    # Named by PID in the shared log: several workers write the same lines.
    return Bus(
        listener_timeout=graceful_timeout + 30.0,
        exit_timeout=graceful_timeout + 60.0,
        logger=f"sitebus.worker.{os.getpid()}",
    )


def _serve(bus: Bus, site: dict[str, Any], handed: list[tuple[str, int]], link: MasterLink) -> int:
    """``sitebus serve``'s site: one app on one engine."""
    from ..cli import load_app

    level = logging.getLevelNamesMapping()[str(site.get("log_level", "info")).upper()]
    logs, held = command_log(bus, level)
    try:
        thresholds = pause_collector()
        try:
            app = load_app(site["app"])
            engine = load_engine(site.get("engine") or ("uvicorn" if is_asgi(app) else "cheroot"))
        finally:
            resume_collector(thresholds)
        threads = site.get("threads")
        if threads is not None and not engine.pools_threads:
            raise ConfigError(
                f"--threads does not apply to the {engine.engine} engine, "
                "which serves each connection in a thread of its own"
            )
        sockets = WorkerSockets(bus, SocketsOptions(binds=tuple(site["binds"])), handed)
        options = ServerOptions(
            graceful_timeout=float(site.get("graceful_timeout", 30.0)),
            threads=threads or ServerOptions.threads,
            certfile=site.get("certfile"),
            keyfile=site.get("keyfile"),
        )
        plugins: list[Plugin] = [sockets, link]
        health = site.get("health")
        if health is not None:
            from ..plugins.health import Health, HealthOptions

            # The master drains; here the probes only answer, 503 once told to drain.
            probes = Health(bus, HealthOptions(**health, drain_delay=0.0))
            app = probes.asgi(app) if is_asgi(app) else probes.wsgi(app)
            link.on_drain = probes.begin_drain
            plugins.append(probes)
            app = link.counted(app, uncounted=(probes.options.live, probes.options.ready))
        else:
            app = link.counted(app)
        server = engine(bus, app, sockets, options)
        return _block(bus, held, (*plugins, server), handed)
    finally:
        logs.unsubscribe()


def _run(bus: Bus, site: dict[str, Any], handed: list[tuple[str, int]], link: MasterLink) -> int:
    """``sitebus run``'s site: the site file's servers, apps and app plugins."""
    from ..site.run import configure
    from .run import run_worker

    config = configure(site["site_file"], site.get("overrides", ()))

    def sockets(worker_bus: Bus, options: SocketsOptions) -> Sockets:
        return WorkerSockets(worker_bus, options, handed)

    return run_worker(
        config,
        bus,
        sockets,
        link,
        log_level=site.get("log_level"),
        started=lambda: close_unclaimed(handed),
    )


def _block(bus: Bus, held: Any, plugins: Iterable[Plugin], handed: list[tuple[str, int]]) -> int:
    for plugin in plugins:
        plugin.subscribe()
    signals = Signals(bus, WORKER_SIGNALS)
    signals.subscribe()
    try:
        return start_and_block(
            bus, held, over=lambda: None, started=lambda: close_unclaimed(handed)
        )
    finally:
        signals.unsubscribe()


def close_unclaimed(handed: list[tuple[str, int]]) -> None:
    """Close the master's sockets that no server of this worker claimed once it started.

    A site file changed since the master read it may name fewer addresses:
    a descriptor nobody accepts on must not stay open here.
    """
    while handed:
        _, fd = handed.pop()
        with contextlib.suppress(OSError):
            os.close(fd)


if __name__ == "__main__":
    sys.exit(main())
