"""The signals plugin: in-process with raise_signal, and real signals to real children."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

import pytest

from conftest import Child
from sitebus import Bus, State, StateError
from sitebus.errors import ConfigError
from sitebus.plugins.signals import DEFAULT_ACTIONS, Signals, SignalsOptions

Spawn = Callable[..., Child]
SCRIPT = "tests/children/process_site.py"


@pytest.fixture
def signals(bus: Bus) -> Iterator[Callable[..., Signals]]:
    """Subscribe a Signals plugin; it is always unsubscribed after the test."""
    made: list[Signals] = []

    def make(**actions: str) -> Signals:
        plugin = Signals(bus, SignalsOptions(actions=actions))
        plugin.subscribe()
        made.append(plugin)
        return plugin

    yield make
    for plugin in made:
        plugin.unsubscribe()


def test_default_map_installs_and_unsubscribe_restores_previous_handlers(bus: Bus) -> None:
    def mine(signum: int, frame: FrameType | None) -> None:
        pass

    before = {s: signal.getsignal(s) for s in signal.Signals}
    previous = signal.signal(signal.SIGUSR1, mine)
    try:
        plugin = Signals(bus)
        plugin.subscribe()
        plugin.subscribe()  # a second subscribe installs nothing more
        for name in DEFAULT_ACTIONS:
            assert callable(signal.getsignal(signal.Signals[name]))
        assert signal.getsignal(signal.SIGUSR1) is not mine
        plugin.unsubscribe()
        assert signal.getsignal(signal.SIGUSR1) is mine
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert {s: signal.getsignal(s) for s in signal.Signals} == before


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_exit_with_status_zero(
    bus: Bus, signals: Callable[..., Signals], signum: int
) -> None:
    signals()
    bus.start()
    signal.raise_signal(signum)
    assert bus.block() == 0
    assert bus.wait(State.EXITING, timeout=5)


def test_sigusr1_is_graceful_and_a_burst_coalesces(
    bus: Bus, signals: Callable[..., Signals]
) -> None:
    signals()
    graceful: list[State] = []

    @bus.subscribe("graceful")
    def once() -> None:
        graceful.append(bus.state)
        bus.request_exit()

    bus.start()
    for _ in range(50):
        signal.raise_signal(signal.SIGUSR1)
    assert bus.block() == 0
    assert bus.wait(State.EXITING, timeout=5)
    assert graceful == [State.STARTED]


def test_map_is_configurable_per_signal(bus: Bus, signals: Callable[..., Signals]) -> None:
    before = signal.getsignal(signal.SIGHUP)
    signals(usr2="exit", SIGUSR1="ignore", HUP="none")
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGHUP) is before
    bus.start()
    signal.raise_signal(signal.SIGUSR1)  # ignored: nothing happens
    signal.raise_signal(signal.SIGUSR2)
    assert bus.block() == 0


@pytest.mark.parametrize(
    ("actions", "named"),
    [
        ({"SIGBOGUS": "exit"}, "'SIGBOGUS'"),
        ({"SIGKILL": "exit"}, "'SIGKILL'"),
        ({"SIGTERM": "explode"}, "SIGTERM='explode'"),
    ],
)
def test_unknown_signal_or_action_is_a_clear_error(actions: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match="expected") as info:
        SignalsOptions(actions=actions)
    assert named in str(info.value)


def test_subscribe_from_another_thread_is_a_clear_error(bus: Bus) -> None:
    plugin = Signals(bus)
    errors: list[BaseException] = []

    def subscribe() -> None:
        try:
            plugin.subscribe()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=subscribe, name="not-main")
    thread.start()
    thread.join()
    assert len(errors) == 1 and isinstance(errors[0], StateError), errors
    assert "main thread" in str(errors[0]) and "'not-main'" in str(errors[0])
    assert bus.listeners("start") == ()


# -- real signals to a real child -----------------------------------------------


@pytest.fixture
def site(spawn: Spawn) -> Callable[..., Child]:
    def start(*options: str) -> Child:
        child = spawn([SCRIPT, *options])
        child.expect("started 0")
        return child

    return start


def _expect_clean_exit(child: Child) -> None:
    child.expect("stop")
    child.expect("exit")
    child.expect("exited 0")
    assert child.wait() == 0, child.output()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_child_exits_zero_on_sigterm_and_sigint(site: Callable[..., Child], signum: int) -> None:
    child = site()
    child.signal(signum)
    _expect_clean_exit(child)


def test_child_restarts_on_sighup_with_the_same_pid(site: Callable[..., Child]) -> None:
    child = site()
    child.signal(signal.SIGHUP)
    child.expect("stop")
    child.expect("exit")
    assert child.expect("started 1").split()[2] == str(child.pid)
    child.signal(signal.SIGTERM)
    _expect_clean_exit(child)


def test_child_on_a_terminal_exits_on_sighup_and_says_so(site: Callable[..., Child]) -> None:
    child = site("--tty")
    child.signal(signal.SIGHUP)
    _expect_clean_exit(child)
    assert "SIGHUP while on a terminal" in child.stderr(), child.output()
    assert "exiting instead of restarting" in child.stderr()


def test_child_burst_of_sigusr1_is_graceful_without_dying(site: Callable[..., Child]) -> None:
    child = site()
    for _ in range(200):
        child.signal(signal.SIGUSR1)
    child.expect("graceful")
    child.signal(signal.SIGTERM)
    # However many gracefuls the burst coalesced into, the exit comes after them.
    while (line := child.next_report()) == "graceful":
        pass
    assert line == "stop", child.output()
    child.expect("exit")
    child.expect("exited 0")
    assert child.wait() == 0


def test_child_custom_map_from_options(site: Callable[..., Child]) -> None:
    child = site("--signal", "SIGUSR2=exit", "--signal", "SIGTERM=ignore")
    child.signal(signal.SIGTERM)  # ignored
    child.signal(signal.SIGUSR2)
    _expect_clean_exit(child)


def _ignored_signals(pid: int) -> set[int]:
    """The signals the kernel ignores for ``pid`` (SIG_IGN), from /proc."""
    with open(f"/proc/{pid}/status") as status:
        mask = next(int(line.split()[1], 16) for line in status if line.startswith("SigIgn:"))
    return {signum for signum in range(1, 65) if mask & (1 << (signum - 1))}


def test_child_ignore_action_sets_sig_ign_and_survives_the_signal(
    site: Callable[..., Child],
) -> None:
    """``ignore`` is SIG_IGN in the kernel: the default action (death) never runs."""
    child = site("--signal", "SIGUSR2=ignore")
    assert signal.SIGUSR2 in _ignored_signals(child.pid)
    child.signal(signal.SIGUSR2)
    # Pending standard signals are delivered lowest number first: SIGUSR2 (12)
    # reaches the child before SIGTERM (15) ends it cleanly.
    child.signal(signal.SIGTERM)
    _expect_clean_exit(child)


def test_child_one_ctrl_c_while_starting_exits_once_started(spawn: Spawn) -> None:
    child = spawn([SCRIPT, "--hold-start"])
    child.expect("holding")
    child.signal(signal.SIGINT)
    child.release()
    child.expect("started 0")
    _expect_clean_exit(child)


def test_child_second_ctrl_c_while_starting_aborts_the_hung_start(spawn: Spawn) -> None:
    child = spawn([SCRIPT, "--hold-start"])
    child.expect("holding")
    child.signal(signal.SIGINT)
    os.write(child._hold_write, b"pi\n")  # two signals sent at once would merge into one
    child.expect("pong")
    child.signal(signal.SIGINT)
    assert child.wait() == -signal.SIGINT, child.output()
    assert "KeyboardInterrupt" in child.stderr()
