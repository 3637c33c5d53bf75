"""The bus's main-thread half: ``block()`` and the signal-safe requests it carries out.

A signal handler may only record what it wants done: it runs between two
bytecodes of the main thread, perhaps while that thread holds one of the
bus's locks. ``request_exit``, ``request_restart`` and ``request_graceful``
therefore write one attribute and ping a self-pipe; ``block()`` sleeps on that
pipe in the main thread and carries the requests out there: an exit, a
graceful reload, or a restart that stops the site and re-executes the
process (``_reexec``), its listening sockets handed over (``_handover``).
``Bus`` inherits this class; the transitions themselves live in ``bus.py``.
"""

from __future__ import annotations

import signal
import threading
import time
from logging import ERROR, WARNING
from typing import TYPE_CHECKING

from . import _handover
from ._reexec import cannot_reexec, reexec, release_held_signals, take_pending_exit
from ._wakeup import Wakeup
from .errors import ChannelFailures, StateError

__all__ = ["MainThread"]


class MainThread:
    """What ``block()`` needs of the bus, and the requests it serves."""

    thread_join_timeout: float
    _exited: bool
    _status: int

    if TYPE_CHECKING:  # provided by Bus

        def exit(self, status: int = 0) -> None: ...
        def graceful(self) -> None: ...
        def log(
            self, message: str, level: int = ..., exc_info: bool | BaseException = ...
        ) -> None: ...

    def _init_main_thread(self) -> None:
        self._threads: list[threading.Thread] = []
        # Requests from signal handlers: plain attribute writes, never a lock.
        self._exit_request: int | None = None
        self._restart_request = False
        self._graceful_request = False
        self._wakeup: Wakeup | None = None
        self._blocking = False
        self._exiting_in_block = False
        self._restarting = False  # decided once, when block() begins the teardown

    @property
    def restarting(self) -> bool:
        """True once a restart is under way: stop listeners keep what must survive exec."""
        return self._restarting

    # -- requests: safe from signal handlers --------------------------------

    def request_exit(self, status: int = 0) -> None:
        """Ask ``block()`` to exit. Safe in a signal handler: no lock, no waiting.

        Repeated requests coalesce, also while the site is already stopping
        (supervisors send SIGTERM more than once): only a ``KeyboardInterrupt``
        in the main thread, a second Ctrl-C, cuts the stop short. An exit
        request that arrives while a restart is tearing down does not cut the
        restart short (its sockets are already kept for the new image): the
        new image carries the exit out, with a graceful stop, as soon as its
        ``block()`` runs.
        """
        if self._exit_request is None:
            self._exit_request = status
        self._wake()

    def request_restart(self) -> None:
        """Ask ``block()`` to stop and re-execute the process; signal-safe."""
        self._restart_request = True
        self._wake()

    def request_graceful(self) -> None:
        """Ask ``block()`` to publish ``graceful``; signal-safe, repeats coalesce."""
        self._graceful_request = True
        self._wake()

    def restart(self) -> None:
        """Stop and re-execute the same command line; ``block()`` carries it out.

        Callable from any thread while ``block()`` runs in the main thread.
        """
        if not self._blocking:
            raise StateError(
                "restart() needs block() running in the main thread to re-execute the process"
            )
        self.request_restart()

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None:
            wakeup.ping()

    # -- the main thread ----------------------------------------------------

    def register_thread(self, thread: threading.Thread) -> None:
        """Have ``block()`` join ``thread`` (within the bound) after the bus exits."""
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def block(self) -> int:
        """Carry out requests in the main thread until the bus exits; return its status.

        Ctrl-C becomes ``exit()``; a second one while stopping returns at once
        with status 1 (repeated exit requests, a second SIGTERM, coalesce).
        After the exit, the threads registered with ``register_thread`` are
        joined within ``thread_join_timeout`` seconds (those still running are
        named) and a pending restart re-executes the process. Use it as
        ``sys.exit(bus.block())``.
        """
        if threading.current_thread() is not threading.main_thread():
            raise StateError("block() must run in the main thread, where signals are handled")
        if self._blocking:
            raise StateError("block() is already running")
        # Publish the wake-up before reading the requests: a request either
        # sees it and pings, or was recorded before and is seen below.
        wakeup = self._wakeup = Wakeup()
        # The kernel delivers a process signal to any thread that does not block
        # it; the C-level handler then writes here, which wakes select() in the
        # main thread so that the Python handler runs at once. It stays set
        # until the re-exec: see reexec() for why.
        previous_wakeup_fd = signal.set_wakeup_fd(wakeup.write_fd, warn_on_full_buffer=False)
        self._blocking = True
        try:
            pending_exit = take_pending_exit()
            if pending_exit is not None and self._exit_request is None:
                self._exit_request = pending_exit
            release_held_signals()
            # Every plugin took its part of a re-exec's hand-over during start.
            _handover.close_unclaimed()
            self._serve_requests(wakeup)
            self._join_threads()
            if self._restarting:
                reexec(self.log, wakeup, lambda: self._exit_request)
                return 1
            return self._status
        except KeyboardInterrupt:
            if not self._exiting_in_block:
                raise
            self.log("Second exit request while stopping: exiting now", ERROR)
            return max(self._status, 1)
        finally:
            self._blocking = self._exiting_in_block = False
            signal.set_wakeup_fd(previous_wakeup_fd)
            self._wakeup = None
            wakeup.close()

    def _serve_requests(self, wakeup: Wakeup) -> None:
        while not self._exited:
            try:
                if self._exit_request is None and self._restart_request:
                    self._restart_request = False
                    why = cannot_reexec()
                    if why is not None:
                        # Checked before the teardown: a site torn down for a
                        # restart that cannot start again would stay down.
                        self.log(f"Not restarting: {why}; the site keeps serving", ERROR)
                        continue
                    self._restarting = True
                if self._exit_request is not None or self._restarting:
                    self._exiting_in_block = True
                    # An exit asked for before the teardown begins beats a restart.
                    if self._exit_request is not None:
                        self._restarting = False
                    self.exit(self._exit_request or 0)
                elif self._graceful_request:
                    self._graceful_request = False
                    try:
                        self.graceful()
                    except ChannelFailures as failures:
                        self.log(str(failures), ERROR)
                else:
                    wakeup.wait()
            except KeyboardInterrupt:
                if self._exiting_in_block:
                    raise
                self.log("Interrupted: exiting")
                self._exit_request = 0

    def _join_threads(self) -> None:
        deadline = time.monotonic() + self.thread_join_timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            self.log(
                f"Threads still running {self.thread_join_timeout:g} s after exit: "
                + ", ".join(stuck),
                WARNING,
            )
