"""A site with the process plugins, driven by block(); it reports each step to the test.

Options choose the plugins (--daemon, --pidfile PATH, --user/--group, signals
always unless --no-signals) and what to do (--fail-start, --restart-once,
--hold-start, --tty, --become USER to run unprivileged, --thread to leave a thread
running). Reports: ``started GEN PID``, ``ids ...`` after each start,
``daemon ...`` in a daemon, ``graceful``, ``stop``, ``exit``, ``exited N``,
``start-failed MESSAGE``.
"""

from __future__ import annotations

import argparse
import os
import pty
import pwd
import sys
import threading

from report import report

from sitebus import Bus, StartError
from sitebus.plugins.daemon import Daemon, DaemonOptions
from sitebus.plugins.pidfile import Pidfile, PidfileOptions
from sitebus.plugins.privileges import Privileges, PrivilegesOptions
from sitebus.plugins.signals import Signals, SignalsOptions


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--signal", action="append", default=[], help="NAME=ACTION")
    parser.add_argument("--no-signals", action="store_true")
    parser.add_argument("--tty", action="store_true")
    parser.add_argument("--daemon", action="store_true")
    parser.add_argument("--stdout")
    parser.add_argument("--stderr")
    parser.add_argument("--umask", type=lambda text: int(text, 8))
    parser.add_argument("--chdir", default="/")
    parser.add_argument("--pidfile")
    parser.add_argument("--user")
    parser.add_argument("--group")
    parser.add_argument("--no-supplementary", action="store_true")
    parser.add_argument("--become")
    parser.add_argument("--thread", action="store_true")
    parser.add_argument("--fail-start", action="store_true")
    parser.add_argument("--hold-start", action="store_true")
    parser.add_argument("--restart-once", action="store_true")
    return parser.parse_args()


def ids() -> str:
    try:
        os.setuid(0)
        regain = "ok"
    except PermissionError as exc:
        regain = str(exc.errno)
    uids = ",".join(map(str, os.getresuid()))
    gids = ",".join(map(str, os.getresgid()))
    groups = ",".join(map(str, sorted(os.getgroups())))
    return f"ids {uids} {gids} groups={groups} regain={regain}"


def daemon_facts() -> str:
    umask = os.umask(0)
    os.umask(umask)
    fds = " ".join(os.readlink(f"/proc/self/fd/{fd}") for fd in (0, 1, 2))
    return (
        f"daemon {os.getpid()} ppid={os.getppid()} sid={os.getsid(0)} "
        f"cwd={os.getcwd()} umask={umask:03o} {fds}"
    )


def hold_until_released() -> None:
    """Block until the test releases us ("go"); answer each "pi" with "pong".

    A pong tells the test that every signal sent before the ping was handled:
    the read was interrupted, the handler ran, then the read resumed.
    """
    fd = int(os.environ["SITEBUS_TEST_HOLD_FD"])
    while os.read(fd, 3) == b"pi\n":
        report("pong")


def main() -> int:
    args = parse()
    generation = int(os.environ.get("CHILD_GENERATION", "0"))
    os.environ["CHILD_GENERATION"] = str(generation + 1)  # inherited by a re-exec
    if args.tty:
        # Attach standard input to a terminal; the master stays open so it is live.
        _master, slave = pty.openpty()
        os.dup2(slave, 0)
    if args.become and generation == 0:
        entry = pwd.getpwnam(args.become)
        os.setgroups([])
        os.setresgid(entry.pw_gid, entry.pw_gid, entry.pw_gid)
        os.setresuid(entry.pw_uid, entry.pw_uid, entry.pw_uid)
    if args.thread:
        threading.Thread(target=threading.Event().wait, name="early-worker", daemon=True).start()

    bus = Bus(listener_timeout=30.0)
    if not args.no_signals:
        actions = dict(entry.split("=", 1) for entry in args.signal)
        Signals(bus, SignalsOptions(actions=actions)).subscribe()
    if args.daemon:
        options = DaemonOptions(
            chdir=args.chdir, stdout=args.stdout, stderr=args.stderr, umask=args.umask
        )
        Daemon(bus, options).subscribe()
    if args.pidfile:
        Pidfile(bus, PidfileOptions(path=args.pidfile)).subscribe()
    if args.user or args.group:
        drop = PrivilegesOptions(
            user=args.user, group=args.group, supplementary_groups=not args.no_supplementary
        )
        Privileges(bus, drop).subscribe()

    @bus.subscribe("start")
    def started() -> None:
        if args.hold_start:
            report("holding")
            hold_until_released()
        if args.fail_start:
            raise OSError("[Errno 98] address already in use: 127.0.0.1:8080")

    try:
        bus.start()
    except StartError as exc:
        report(f"start-failed {exc}")
        bus.exit(1)
        return 1
    bus.subscribe("graceful", lambda: report("graceful"))
    bus.subscribe("stop", lambda: report("stop"))
    bus.subscribe("exit", lambda: report("exit"))
    if args.daemon:
        report(daemon_facts())
        print("hello from the daemon", flush=True)
    report(f"started {generation} {os.getpid()}")
    if args.user:
        report(ids())
    if args.restart_once and generation == 0:
        bus.subscribe("graceful", bus.request_restart)
        bus.request_graceful()
    status = bus.block()
    report(f"exited {status}")
    return status


if __name__ == "__main__":
    sys.exit(main())
