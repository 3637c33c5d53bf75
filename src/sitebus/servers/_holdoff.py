"""Holding off new connections on a listener while what it already queued is served.

Closing a TCP listener resets every connection in its accept queue, and any
handshake that completes while it closes: the client sees a reset, not a
refusal. So a stop first makes the listener stop completing handshakes, lets
the engine accept what the kernel queued, and only then closes.

On Linux a classic BPF socket filter on the listener drops packets that carry
SYN: no new handshake starts (the client retransmits its SYN a second later
and, by then, meets a closed port: refused), while the final ACK of a
handshake already under way still passes, so that connection lands in the
queue and is served. A Unix socket has no handshake: removing its path stops
new connects (they get ENOENT) and the queue then only shrinks.

The filter stays on the socket, not on the descriptor: a listener that
another process holds too (systemd's socket unit or FD store) must never get
it, and one adopted from elsewhere has any filter removed (``release_hold``).
"""

from __future__ import annotations

import array
import contextlib
import select
import socket
import struct
import sys
import time

__all__ = ["hold_off_syn", "release_hold", "wait_queue_empty"]

_SO_ATTACH_FILTER = 26
_SO_DETACH_FILTER = 27
# Offsets of a TCP socket filter are relative to the TCP header, whose 14th
# byte holds the flags; SYN is 0x02.
_BPF_LD_B_ABS = 0x30
_BPF_JSET_K = 0x45
_BPF_RET_K = 0x06
_DROP_SYN = (
    (_BPF_LD_B_ABS, 0, 0, 13),  # A = TCP flags
    (_BPF_JSET_K, 0, 1, 0x02),  # SYN set? fall through to drop, else skip to accept
    (_BPF_RET_K, 0, 0, 0),  # drop
    (_BPF_RET_K, 0, 0, 0xFFFFFFFF),  # accept the whole packet
)


def hold_off_syn(sock: socket.socket) -> bool:
    """Make a TCP listener drop new SYNs; False where the OS offers no way to."""
    if not sys.platform.startswith("linux") or sock.family not in (
        socket.AF_INET,
        socket.AF_INET6,
    ):
        return False
    # The kernel reads the program through a pointer: an array has an address
    # to give (and ctypes would cost a stop 3 ms of imports).
    program = array.array("B", b"".join(struct.pack("HBBI", *insn) for insn in _DROP_SYN))
    fprog = struct.pack("HP", len(_DROP_SYN), program.buffer_info()[0])
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
    except OSError:
        return False
    return True


def release_hold(sock: socket.socket) -> None:
    """Remove any socket filter from ``sock``: it accepts new connections again.

    The kernel answers ENOENT when there is none, the usual case.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, _SO_DETACH_FILTER, 0)


def wait_queue_empty(socks: list[socket.socket], quiet: float, deadline: float) -> bool:
    """Wait until no listener has had a connection queued for ``quiet`` seconds.

    The engine keeps accepting meanwhile; a listener is readable exactly while
    its queue holds a connection. The quiet spell covers handshakes whose last
    ACK was still on the wire when new SYNs started being dropped. False if
    ``deadline`` (monotonic) came first.
    """
    live = [s for s in socks if s.fileno() >= 0]
    while time.monotonic() < deadline:
        ready, _, _ = select.select(live, [], [], quiet)
        if not ready:
            return True
        # Queued connections: the engine is accepting them. Look again shortly
        # rather than spin on a descriptor that stays readable until it does.
        time.sleep(0.002)
    return False
