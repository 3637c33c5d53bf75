"""The threads plugin with real threads: numbering, release, stop, concurrency."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sitebus import Bus, ChannelFailures, State
from sitebus.plugins.threads import Threads, ThreadsOptions

WAIT = 10.0


class Recorder:
    """Records start_thread/stop_thread as (event, index, thread name), in order."""

    def __init__(self, bus: Bus) -> None:
        self.events: list[tuple[str, int, str]] = []
        self._lock = threading.Lock()
        bus.subscribe("start_thread", self.start_thread)
        bus.subscribe("stop_thread", self.stop_thread)

    def start_thread(self, index: int) -> None:
        with self._lock:
            self.events.append(("start", index, threading.current_thread().name))

    def stop_thread(self, index: int) -> None:
        with self._lock:
            self.events.append(("stop", index, threading.current_thread().name))


@pytest.fixture
def threads(bus: Bus) -> Iterator[Threads]:
    plugin = Threads(bus)
    plugin.subscribe()
    yield plugin
    plugin.unsubscribe()


@pytest.fixture
def recorder(bus: Bus) -> Recorder:
    return Recorder(bus)


def in_thread(fn: Callable[[], Any], name: str) -> Any:
    """Run ``fn`` in a new thread named ``name``, wait for it, and return its result."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(fn()), name=name)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive()
    return result[0]


class Parked:
    """A real thread that acquires, then waits until told to release and end."""

    def __init__(self, threads: Threads, name: str, *, release: bool = True) -> None:
        self.acquired = threading.Event()
        self.go = threading.Event()
        self.index: int | None = None
        self._threads, self._release = threads, release
        self.thread = threading.Thread(target=self._run, name=name)
        self.thread.start()
        assert self.acquired.wait(WAIT)

    def _run(self) -> None:
        self.index = self._threads.acquire_thread()
        self.acquired.set()
        self.go.wait(WAIT)
        if self._release:
            self._threads.release_thread()

    def end(self) -> None:
        self.go.set()
        self.thread.join(WAIT)
        assert not self.thread.is_alive()


def test_threads_are_numbered_from_one_in_order_of_first_acquire(
    threads: Threads, recorder: Recorder
) -> None:
    first = Parked(threads, "a")
    second = Parked(threads, "b")
    assert (first.index, second.index) == (1, 2)
    assert threads.held() == {"a": 1, "b": 2}
    first.end()
    second.end()
    assert recorder.events == [
        ("start", 1, "a"),
        ("start", 2, "b"),
        ("stop", 1, "a"),
        ("stop", 2, "b"),
    ]


def test_acquiring_again_returns_the_same_index_and_publishes_nothing(
    threads: Threads, recorder: Recorder
) -> None:
    def twice() -> tuple[int, int, int | None]:
        first, again = threads.acquire_thread(), threads.acquire_thread()
        index = threads.current_index()
        threads.release_thread()
        threads.release_thread()  # a second release is a no-op
        return first, again, index

    assert in_thread(twice, "w") == (1, 1, 1)
    assert recorder.events == [("start", 1, "w"), ("stop", 1, "w")]
    assert threads.current_index() is None


def test_released_index_goes_to_the_next_new_thread(threads: Threads) -> None:
    first, second, third = (Parked(threads, n) for n in "abc")
    second.end()
    fourth = Parked(threads, "d")
    assert fourth.index == 2, "the smallest free index is reused"
    for parked in (first, third, fourth):
        parked.end()


def test_indexes_are_never_reused_when_reuse_is_off(bus: Bus) -> None:
    plugin = Threads(bus, ThreadsOptions(reuse_indexes=False))
    indexes = [in_thread(plugin.acquire_thread, f"t{i}") for i in range(3)]
    assert indexes == [1, 2, 3]
    plugin.release_all()


def test_servers_can_publish_the_channels(bus: Bus, threads: Threads, recorder: Recorder) -> None:
    def serve() -> list[Any]:
        acquired = bus.publish("acquire_thread")
        bus.publish("release_thread")
        return acquired

    assert in_thread(serve, "request") == [1]
    assert recorder.events == [("start", 1, "request"), ("stop", 1, "request")]


def test_bus_stop_releases_every_thread_from_the_stopping_thread(
    bus: Bus, threads: Threads, recorder: Recorder
) -> None:
    bus.start()
    parked = [Parked(threads, n) for n in "ab"]
    bus.stop()
    assert threads.held() == {}
    stops = [e for e in recorder.events if e[0] == "stop"]
    assert [index for _, index, _ in stops] == [1, 2]
    assert all(name not in ("a", "b") for _, _, name in stops), "released by the stop, not by a/b"
    for p in parked:
        p.end()  # their own release after the stop publishes nothing more
    assert len(recorder.events) == 4


def test_exit_releases_threads_acquired_while_stopped(
    bus: Bus, threads: Threads, recorder: Recorder
) -> None:
    parked = Parked(threads, "early")
    bus.exit()
    assert recorder.events[-1][:2] == ("stop", 1)
    parked.end()


def test_thread_that_ended_without_release_gives_its_index_back(
    threads: Threads, recorder: Recorder
) -> None:
    gone = Parked(threads, "gone", release=False)
    gone.end()
    assert in_thread(threads.acquire_thread, "next") == 1
    assert recorder.events[1:] == [("stop", 1, "next"), ("start", 1, "next")]
    threads.release_all()


def test_index_is_not_reused_until_its_stop_thread_returned(bus: Bus, threads: Threads) -> None:
    """A slow stop_thread(1) holds index 1: a thread starting meanwhile gets 2."""
    in_stop, finish = threading.Event(), threading.Event()

    def slow_stop(index: int) -> None:
        in_stop.set()
        assert finish.wait(WAIT)

    bus.subscribe("stop_thread", slow_stop)
    leaving = Parked(threads, "leaving")
    leaving.go.set()
    assert in_stop.wait(WAIT)
    assert threads.acquire_thread() == 2
    finish.set()
    leaving.end()
    bus.unsubscribe("stop_thread", slow_stop)
    assert in_thread(threads.acquire_thread, "later") == 1
    threads.release_all()


def test_failing_start_thread_raises_and_the_thread_keeps_its_index(
    bus: Bus, threads: Threads, recorder: Recorder
) -> None:
    def broken(index: int) -> None:
        raise RuntimeError("no connection")

    bus.subscribe("start_thread", broken)

    def acquire() -> str:
        with pytest.raises(ChannelFailures, match="no connection"):
            threads.acquire_thread()
        assert threads.current_index() == 1
        threads.release_thread()
        return "ok"

    assert in_thread(acquire, "w") == "ok"
    assert recorder.events == [("start", 1, "w"), ("stop", 1, "w")]


def test_stop_waits_for_a_start_thread_still_running(
    bus: Bus, threads: Threads, recorder: Recorder
) -> None:
    entered, go = threading.Event(), threading.Event()

    def slow_start(index: int) -> None:
        entered.set()
        assert go.wait(WAIT)

    bus.subscribe("start_thread", slow_start)
    bus.start()
    worker = threading.Thread(target=threads.acquire_thread, name="slow")
    worker.start()
    assert entered.wait(WAIT)
    stopper = threading.Thread(target=bus.stop, name="stopper")
    stopper.start()
    assert bus.wait(State.STOPPING, WAIT)
    go.set()
    stopper.join(WAIT)
    worker.join(WAIT)
    assert not stopper.is_alive() and not worker.is_alive()
    assert [e[:2] for e in recorder.events] == [("start", 1), ("stop", 1)]
    assert recorder.events[1][2] != "slow", "released by the stop"


def test_concurrent_threads_never_share_an_index(bus: Bus, threads: Threads) -> None:
    """16 threads acquire and release 50 times each: live indexes stay distinct."""
    live: dict[int, str] = {}
    lock = threading.Lock()
    problems: list[str] = []

    def start_thread(index: int) -> None:
        with lock:
            if index in live:
                problems.append(f"{index} started while held by {live[index]}")
            live[index] = threading.current_thread().name

    def stop_thread(index: int) -> None:
        with lock:
            if live.pop(index, None) is None:
                problems.append(f"{index} stopped while not held")

    bus.subscribe("start_thread", start_thread)
    bus.subscribe("stop_thread", stop_thread)
    barrier = threading.Barrier(16)

    def work() -> None:
        barrier.wait(WAIT)
        for _ in range(50):
            threads.acquire_thread()
            threads.release_thread()

    workers = [threading.Thread(target=work, name=f"w{i}") for i in range(16)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(WAIT)
    assert not any(w.is_alive() for w in workers)
    assert problems == []
    assert live == {}


def test_a_start_thread_listener_may_stop_the_bus() -> None:
    """Stop from inside start_thread (teardown in the calling thread) does not deadlock."""
    bus = Bus(listener_timeout=None)
    plugin = Threads(bus)
    plugin.subscribe()
    stopped: list[int] = []
    bus.subscribe("start_thread", lambda index: bus.stop())
    bus.subscribe("stop_thread", stopped.append)
    bus.start()
    assert in_thread(plugin.acquire_thread, "stopper") == 1
    assert stopped == [1] and bus.state is State.STOPPED
