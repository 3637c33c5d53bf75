"""Privileges: become an unprivileged user once the privileged work is done.

The drop runs at ``StartOrder.PRIVILEGES``: after the sockets bound their (possibly
privileged) ports at 60 and before the servers serve at 70, so no request is
ever handled as root. It sets the supplementary groups, then the real,
effective and saved group ids, then the three user ids; the order matters,
because only root may change groups. It is irrevocable (the saved ids change
too) and verified: if root can be regained afterwards, the start fails.

After a re-exec the process already runs as the target user; the plugin then
checks that and does nothing, instead of failing as a second ``setuid`` would.
"""

from __future__ import annotations

import grp
import os
import pwd
from typing import TYPE_CHECKING, NamedTuple

from .._options import Options, check_range
from ..errors import ChannelFailures, ConfigError, ProcessError
from ..plugin import Plugin, StartOrder, priority

if TYPE_CHECKING:
    from ..bus import Bus

__all__ = ["Credentials", "Privileges", "PrivilegesOptions"]


class Credentials(NamedTuple):
    """Who the process becomes; published on ``privileges.dropping`` just before the drop.

    A listener that raises there (the PID file, when the new user could not
    remove it at exit) stops the drop and fails the start, while the process
    is still root and can clean up.
    """

    user: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    """The supplementary groups, sorted; empty when they are cleared."""


class PrivilegesOptions(Options):
    """The user and group to become, each a name or a number; the umask to set.

    ``group`` defaults to the user's primary group. ``supplementary_groups``:
    True gives the user's groups from the group database (``initgroups``),
    False keeps none besides the primary group. ``umask`` is set even when
    neither user nor group is given; None leaves it.
    """

    user: str | int | None = None
    group: str | int | None = None
    umask: int | None = None
    supplementary_groups: bool = True

    def __post_init__(self) -> None:
        check_range(self, "umask", 0, 0o777, "permission bits 0 to 777 (octal)")
        for name in ("user", "group"):
            value = getattr(self, name)
            if isinstance(value, int):
                check_range(self, name, 0, 2**32 - 2, "an id from 0 to 4294967294")
            elif value == "":
                raise ConfigError(f"PrivilegesOptions.{name}: expected a name or a number, got ''")


class Privileges(Plugin):
    """Drops to ``options.user``/``options.group`` at start; stop changes nothing back."""

    def __init__(self, bus: Bus, options: PrivilegesOptions | None = None) -> None:
        super().__init__(bus)
        self.options = options if options is not None else PrivilegesOptions()

    @priority(StartOrder.PRIVILEGES)
    def start(self) -> None:
        options = self.options
        if options.umask is not None:
            old = os.umask(options.umask)
            self.bus.log(f"umask set to {options.umask:03o} (was {old:03o})")
        if options.user is None and options.group is None:
            return
        target = resolve(options.user, options.group, options.supplementary_groups)
        if _already(target):
            self.bus.log(f"Already running as user {target.user} (uid {target.uid})")
            return
        if os.geteuid() != 0:
            raise ProcessError(
                f"cannot change to user {target.user!r} (uid {target.uid}) and group "
                f"{target.gid}: this process runs as uid {os.geteuid()}, not root"
            )
        try:
            self.bus.publish("privileges.dropping", target)
        except ChannelFailures as failures:
            reasons = "; ".join(str(exc) for _, exc in failures.failures)
            raise ProcessError(f"not dropping privileges: {reasons}") from failures
        _drop(target)
        _verify(target)
        self.bus.log(
            f"Dropped privileges to user {target.user} (uid {target.uid}), gid {target.gid}, "
            f"groups {list(target.groups)}"
        )


def resolve(
    user: str | int | None, group: str | int | None, supplementary_groups: bool = True
) -> Credentials:
    """The ids for ``user`` and ``group`` (names or numbers); ``ConfigError`` if unknown.

    A missing user means the current one; a missing group, the user's primary group.
    """
    if user is None:
        uid = os.geteuid()
        entry = _passwd(uid)
    elif isinstance(user, int) or user.isdigit():
        uid = int(user)
        entry = _passwd(uid)
    else:
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise ConfigError(f"unknown user {user!r}: not in the password database") from None
        uid = entry.pw_uid
    name = entry.pw_name if entry is not None else str(uid)
    if group is None:
        if entry is None:
            raise ConfigError(
                f"user {user!r} is not in the password database, so it has no primary "
                "group: give the group too"
            )
        gid = entry.pw_gid if user is not None else os.getegid()
    elif isinstance(group, int) or group.isdigit():
        gid = int(group)
    else:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise ConfigError(f"unknown group {group!r}: not in the group database") from None
    groups: tuple[int, ...] = ()
    if supplementary_groups and entry is not None:
        groups = tuple(sorted(set(os.getgrouplist(entry.pw_name, gid))))
    return Credentials(name, uid, gid, groups)


def _passwd(uid: int) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(uid)
    except KeyError:
        return None


def _already(target: Credentials) -> bool:
    """Whether every user and group id already is the target's (e.g. after a re-exec)."""
    return set(os.getresuid()) == {target.uid} and set(os.getresgid()) == {target.gid}


def _drop(target: Credentials) -> None:
    try:
        os.setgroups(target.groups)  # what initgroups would set, computed by resolve()
        os.setresgid(target.gid, target.gid, target.gid)
        os.setresuid(target.uid, target.uid, target.uid)
    except OSError as exc:
        raise ProcessError(
            f"dropping privileges to user {target.user!r} failed: {exc.strerror}"
        ) from exc


def _verify(target: Credentials) -> None:
    """Fail loudly unless the ids are the target's and root cannot be regained."""
    uids, gids = os.getresuid(), os.getresgid()
    if set(uids) != {target.uid} or set(gids) != {target.gid}:
        raise ProcessError(
            f"after dropping privileges the ids are uid {uids}, gid {gids}; "
            f"expected {target.uid} and {target.gid}: aborting"
        )
    if set(os.getgroups()) != set(target.groups):
        raise ProcessError(
            f"after dropping privileges the groups are {sorted(os.getgroups())}; "
            f"expected {sorted(target.groups)}: aborting"
        )
    if target.uid == 0:
        return
    for regain in (os.setuid, os.setgid) if target.gid else (os.setuid,):
        try:
            regain(0)
        except PermissionError:
            continue
        raise ProcessError(
            f"{regain.__name__}(0) succeeded after dropping privileges to "
            f"{target.user!r}: the drop is not irrevocable; aborting"
        )
