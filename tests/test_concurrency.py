"""Publishing while other threads subscribe and unsubscribe: copy on write."""

from __future__ import annotations

import threading

from sitebus import Bus

ROUNDS = 2000


def test_publish_sees_consistent_listener_lists_under_churn(bus: Bus) -> None:
    """Publishers never see a torn or unsorted list, never raise, never block."""
    stable = [lambda n=n: n for n in range(5)]
    for n, fn in enumerate(stable):
        bus.subscribe("go", fn, priority=n * 10)
    errors: list[BaseException] = []
    done = threading.Event()

    def publisher() -> None:
        try:
            while not done.is_set():
                results = bus.publish("go")
                stable_results = [r for r in results if isinstance(r, int)]
                assert stable_results == sorted(stable_results)
                assert set(range(5)) <= set(stable_results)
        except BaseException as exc:  # reported to the main thread below
            errors.append(exc)

    def churner(tag: int) -> None:
        try:
            for i in range(ROUNDS):

                def extra(tag: int = tag, i: int = i) -> str:
                    return f"extra-{tag}-{i}"

                bus.subscribe("go", extra, priority=(i % 60))
                bus.unsubscribe("go", extra)
        except BaseException as exc:
            errors.append(exc)

    publishers = [threading.Thread(target=publisher) for _ in range(3)]
    churners = [threading.Thread(target=churner, args=(t,)) for t in range(3)]
    for thread in publishers + churners:
        thread.start()
    for thread in churners:
        thread.join(60)
    done.set()
    for thread in publishers:
        thread.join(60)
    assert errors == []
    assert bus.listeners("go") == tuple(stable)


def test_many_threads_starting_and_stopping_keep_the_state_machine_sound(bus: Bus) -> None:
    starts: list[int] = []
    stops: list[int] = []
    bus.subscribe("start", lambda: starts.append(1))
    bus.subscribe("stop", lambda: stops.append(1))

    def flip(n: int) -> None:
        for _ in range(100):
            bus.start() if n % 2 else bus.stop()

    threads = [threading.Thread(target=flip, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    bus.stop()
    assert len(starts) == len(stops), "every start is matched by exactly one stop"
