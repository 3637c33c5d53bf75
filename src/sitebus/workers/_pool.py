"""The master's worker processes: started, watched, replaced and stopped from one thread.

Every decision about the pool is taken in the supervisor thread, one event
at a time: a line from a worker, a worker's end-of-file (it died), a
deadline (a heartbeat missed, a stop overrun, a backoff over), or a request
from another thread (a signal's, through a self-pipe). Other threads only
record requests and read snapshots, so no decision races another.

The rules, applied after each event (``_balance``):

- fewer live workers than wanted: start one (after the backoff, when the
  last ones died before they accepted);
- workers of an older generation (a rolling restart): start one new worker,
  and once it accepts stop one old one, and wait until that one is gone
  before the next. At most one worker more than wanted exists at any time;
  a new worker that dies before it accepts ends the rollout and the old
  workers keep serving;
- more live workers than wanted: stop the oldest.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from logging import ERROR, INFO, WARNING
from typing import Any

from .._wakeup import Wakeup
from . import _protocol
from ._process import WorkerInfo, describe_status, start_worker

__all__ = ["Pool"]

_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 10.0
# A stop overrunning the graceful timeout by this much is killed.
_STOP_SLACK = 5.0
# The longest the supervisor sleeps without looking at its processes: a
# worker's fork that kept the control socket open hides its death from EOF.
_TICK = 1.0


class Pool:
    """``wanted`` workers serving ``listeners``, started as ``command`` with ``record``.

    ``record`` is the worker's hand-over without the per-worker parts (the
    control descriptor, the master's PID). ``log(message, level)`` writes to
    the master's log; ``changed()`` is called, in the supervisor thread, when
    the workers or their counts changed; ``watch(path)`` with each file a
    worker reports under autoreload; ``failed()`` if the supervisor itself
    fails (a bug), after it killed the workers.
    """

    def __init__(
        self,
        *,
        wanted: int,
        listeners: Sequence[tuple[str, socket.socket]],
        record: dict[str, Any],
        worker_timeout: float,
        start_timeout: float,
        graceful_timeout: float,
        log: Callable[[str, int], None],
        changed: Callable[[], None],
        watch: Callable[[str], None] | None = None,
        failed: Callable[[], None] = lambda: None,
        command: Sequence[str] = (sys.executable, "-m", "sitebus.workers.worker"),
    ) -> None:
        self.wanted = wanted
        self._listeners = list(listeners)
        self._record = record
        self._worker_timeout = worker_timeout
        self._start_timeout = start_timeout
        self._graceful_timeout = graceful_timeout
        self._log = log
        self._changed = changed
        self._watch = watch
        self._failed = failed
        self._command = list(command)
        self._workers: dict[int, WorkerInfo] = {}
        self._lock = threading.Lock()  # guards _workers against readers in other threads
        self._generation = 0
        self._crashes = 0  # workers in a row that died before they accepted
        self._next_start = 0.0
        self._rollout = False
        # Requests from other threads (signal handlers among them): plain writes.
        self._restart_request = False
        self._resize_request = 0
        self._stop_request = False
        self._drain_request = False
        self._holding = False
        self._failed_start: str | None = None  # set while starting, read by wait_started
        self._starting = True
        self._started = threading.Condition()
        self._wakeup = Wakeup()
        self._selector = selectors.DefaultSelector()
        self._thread = threading.Thread(target=self._run, name="sitebus-workers", daemon=True)

    # -- other threads ------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def wait_started(self, timeout: float) -> str | None:
        """Wait until every first worker accepts; None then, else why not."""
        deadline = time.monotonic() + timeout
        with self._started:
            while self._failed_start is None and not self._all_serving():
                left = deadline - time.monotonic()
                if left <= 0:
                    return f"the workers did not all accept within {timeout:g} s"
                self._started.wait(left)
            self._starting = False
            return self._failed_start

    def _all_serving(self) -> bool:
        with self._lock:
            serving = [w for w in self._workers.values() if w.state == "serving"]
        return len(serving) >= self.wanted

    def request_restart(self) -> None:
        """Replace every worker, one at a time; safe in a signal handler."""
        self._restart_request = True
        self._wakeup.ping()

    def request_resize(self, change: int) -> None:
        """One worker more (+1) or fewer (-1), never fewer than one; signal-safe."""
        self._resize_request += change
        self._wakeup.ping()

    def request_drain(self) -> None:
        """Tell every worker that the site drains: readiness probes answer 503; signal-safe."""
        self._drain_request = True
        self._wakeup.ping()

    def hold(self) -> None:
        """Start no worker any more: the site is stopping (a worker that stops meanwhile,
        SIGTERMed with the master by a supervisor, is not replaced)."""
        self._holding = True
        self._wakeup.ping()

    def stop(self, timeout: float) -> None:
        """Stop every worker gracefully and end the supervisor; returns when done.

        A worker still running ``graceful_timeout`` plus a margin after its
        SIGTERM is killed. Safe to call when ``start()`` never ran.
        """
        self._stop_request = True
        self._wakeup.ping()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._wakeup.close()
        self._selector.close()

    def signal_all(self, signum: int) -> None:
        """Send ``signum`` to every worker that is not stopping."""
        for worker in self.snapshot():
            if worker.state != "stopping":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signum)

    def snapshot(self) -> list[WorkerInfo]:
        with self._lock:
            return sorted(self._workers.values(), key=lambda w: w.started)

    @property
    def rolling(self) -> bool:
        """Whether a rolling restart is under way."""
        return self._rollout

    def serving(self) -> int:
        return sum(1 for w in self.snapshot() if w.state == "serving")

    # -- the supervisor thread ------------------------------------------------

    def _run(self) -> None:
        self._selector.register(self._wakeup.fileno(), selectors.EVENT_READ, None)
        try:
            while True:
                now = time.monotonic()
                timeout = max(0.0, min(self._next_deadline(now), now + _TICK) - now)
                for key, _ in self._selector.select(timeout):
                    if key.data is None:
                        self._wakeup.drain()
                    else:
                        self._read(key.data)
                self._take_requests()
                self._reap()
                self._enforce_deadlines()
                if self._stop_request and not self._workers:
                    return
                if not (self._stop_request or self._holding):
                    self._balance()
        except Exception as exc:  # a bug here must not leave the site unwatched, silently
            self._log(f"The worker supervisor failed: {type(exc).__name__}: {exc}", ERROR)
            self._kill_all()
            self._failed()
            raise

    def _next_deadline(self, now: float) -> float:
        deadlines = [self._next_start] if self._next_start > now else []
        for worker in self._workers.values():
            if worker.conn is None:
                deadlines.append(now + 0.05)  # it closed its end: reap it soon
            elif worker.state == "stopping":
                deadlines.append(worker.deadline)
            elif worker.state == "booting":
                deadlines.append(worker.started + self._start_timeout)
            else:
                deadlines.append(worker.beat + self._worker_timeout)
        return min(deadlines, default=now + _TICK)

    def _take_requests(self) -> None:
        if self._drain_request:
            self._drain_request = False
            for worker in self._workers.values():
                if worker.conn is not None and worker.state != "stopping":
                    with contextlib.suppress(OSError):  # gone: reaped soon
                        worker.conn.sendall(_protocol.DRAIN)
        if self._stop_request:
            self._rollout = False
            for worker in self._workers.values():
                self._stop(worker, "the site stops")
            return
        if self._restart_request:
            self._restart_request = False
            self._generation += 1
            self._rollout = True
            self._log(
                f"Rolling restart: replacing {len(self._live())} worker(s) one at a time", INFO
            )
            self._changed()
        change, self._resize_request = self._resize_request, 0
        if change:
            self.wanted = max(1, self.wanted + change)
            self._log(f"Workers wanted: {self.wanted}", INFO)

    def _read(self, worker: WorkerInfo) -> None:
        assert worker.conn is not None
        try:
            data = worker.conn.recv(4096)
        except OSError:
            data = b""
        if not data:
            self._selector.unregister(worker.conn)
            worker.conn.close()
            worker.conn = None
            return
        worker.buffer += data
        while b"\n" in worker.buffer:
            line, worker.buffer = worker.buffer.split(b"\n", 1)
            message = _protocol.parse(line)
            if message is not None:
                self._on_message(worker, message)

    def _on_message(self, worker: WorkerInfo, message: _protocol.Message) -> None:
        if message.kind == "watch":
            if self._watch is not None:
                self._watch(message.path)
            return
        worker.beat = time.monotonic()
        if message.kind == "beat":
            worker.requests, worker.rss = message.requests, message.rss
        elif message.kind == "ready" and worker.state == "booting":
            worker.state = "serving"
            self._crashes = 0
            self._log(f"Worker {worker.pid} serving", INFO)
            self._changed()  # before the start may end: the status counts it first
            with self._started:
                self._started.notify_all()
            return
        elif message.kind == "stopping" and worker.state != "stopping":
            self._log(f"Worker {worker.pid} stopping by itself", INFO)
            self._mark_stopping(worker, "it stopped by itself")
        self._changed()

    def _reap(self) -> None:
        for worker in list(self._workers.values()):
            status = worker.process.poll()
            if status is None:
                continue
            if worker.conn is not None:
                self._selector.unregister(worker.conn)
                worker.conn.close()
            with self._lock:
                del self._workers[worker.pid]
            self._reaped(worker, status)
            self._changed()

    def _reaped(self, worker: WorkerInfo, status: int) -> None:
        how = describe_status(status)
        if worker.state == "stopping":
            level = INFO if status == 0 else WARNING
            self._log(f"Worker {worker.pid} exited ({how}) after {worker.stop_reason}", level)
            return
        if worker.state == "serving":
            self._log(f"Worker {worker.pid} exited unexpectedly ({how}); starting another", ERROR)
            return
        # It died before it accepted: its own error went to standard error.
        if self._starting:
            self._fail_start(f"worker {worker.pid} exited ({how}) before it accepted")
            return
        if worker.generation == self._generation and self._rollout and self._stale():
            self._rollout = False
            for old in self._stale():
                old.generation = self._generation
            self._log(
                f"Rolling restart stopped: new worker {worker.pid} exited ({how}) before it "
                "accepted; the old workers keep serving",
                ERROR,
            )
            self._changed()
            return
        self._crashes += 1
        backoff = min(_BACKOFF_FIRST * 2 ** (self._crashes - 1), _BACKOFF_MAX)
        self._next_start = time.monotonic() + backoff
        self._log(
            f"Worker {worker.pid} exited ({how}) before it accepted; "
            f"starting another in {backoff:.1f} s",
            ERROR,
        )

    def _fail_start(self, why: str) -> None:
        """The first start fails: say why to ``wait_started`` and stop the others."""
        if self._failed_start is None:
            self._failed_start = why
        self._stop_request = True
        with self._started:
            self._started.notify_all()

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for worker in list(self._workers.values()):
            if worker.conn is None and worker.state != "stopping":
                continue  # gone or going: the reaper decides
            if worker.state == "stopping" and now >= worker.deadline:
                self._kill(worker, f"still running {worker.deadline - worker.beat:g} s after")
            elif worker.state == "booting" and now >= worker.started + self._start_timeout:
                why = f"not accepting {self._start_timeout:g} s after its start"
                if self._starting:
                    self._fail_start(f"worker {worker.pid} was {why}")
                self._kill(worker, why)
            elif worker.state == "serving" and now >= worker.beat + self._worker_timeout:
                self._kill(worker, f"no heartbeat for {self._worker_timeout:g} s")

    def _kill(self, worker: WorkerInfo, why: str) -> None:
        self._log(f"Worker {worker.pid}: {why}: killing it (SIGKILL)", ERROR)
        if worker.state != "stopping":
            self._mark_stopping(worker, f"being killed: {why}")
        worker.deadline = float("inf")  # the reaper takes it from here
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGKILL)

    def _kill_all(self) -> None:
        for worker in self._workers.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)

    def _live(self) -> list[WorkerInfo]:
        """Workers that serve or will: not stopping, oldest first."""
        return sorted(
            (w for w in self._workers.values() if w.state != "stopping"), key=lambda w: w.started
        )

    def _stale(self) -> list[WorkerInfo]:
        return [w for w in self._live() if w.generation < self._generation]

    def _balance(self) -> None:
        live = self._live()
        stale = self._stale()
        stopping = any(w.state == "stopping" for w in self._workers.values())
        booting = any(w.state == "booting" for w in live)
        if stale:
            if stopping or booting:
                return  # one at a time: the last step is not over
            if len(live) > self.wanted:
                self._stop(stale[0], "a rolling restart replaced it")
            else:
                self._spawn()
            return
        if self._rollout:
            if any(w.generation < self._generation for w in self._workers.values()):
                return  # the last old worker is still stopping
            self._rollout = False
            self._log("Rolling restart done", INFO)
            self._changed()
        if len(live) < self.wanted and time.monotonic() >= self._next_start:
            self._spawn()
        elif len(live) > self.wanted and not booting:
            self._stop(live[0], "the number of workers went down")

    def _spawn(self) -> None:
        try:
            process, conn = start_worker(self._command, self._listeners, self._record)
        except OSError as exc:
            why = f"cannot start a worker ({' '.join(self._command)}): {exc.strerror or exc}"
            if self._starting:
                self._fail_start(why)
                return
            self._crashes += 1
            self._next_start = time.monotonic() + _BACKOFF_MAX
            self._log(f"{why[0].upper()}{why[1:]}; trying again in {_BACKOFF_MAX:g} s", ERROR)
            return
        worker = WorkerInfo(process, conn, self._generation)
        with self._lock:
            self._workers[worker.pid] = worker
        self._selector.register(conn, selectors.EVENT_READ, worker)
        self._log(f"Worker {worker.pid} started", INFO)
        self._changed()

    def _stop(self, worker: WorkerInfo, why: str) -> None:
        if worker.state == "stopping":
            return
        self._mark_stopping(worker, why)
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGTERM)

    def _mark_stopping(self, worker: WorkerInfo, why: str) -> None:
        worker.state = "stopping"
        worker.stop_reason = why
        worker.beat = time.monotonic()  # the stop's start, for the log
        worker.deadline = worker.beat + self._graceful_timeout + _STOP_SLACK
