"""Integration and end-to-end runs in a network namespace of their own whose only interface is
the loopback one, so that nothing the tests start (the brokers, MLflow, Redis, Envoy, the
services, the whole local stack) can reach anything else, for the whole run.

In such a namespace a connect, send or DNS lookup towards any address beyond loopback fails
at once (ENETUNREACH), and the kernel counts every such attempt in the namespace's own
`OutNoRoutes` counters (/proc/net/snmp and /proc/net/snmp6): the session fails unless they
stay at what the run's self-test caused on purpose (tests/integration/test_loopback.py).

As root the process enters a new network namespace; otherwise a new user namespace (mapping
the user to itself) comes with it, which unprivileged user namespaces allow. This happens at
pytest_configure, while pytest has one thread: a namespace is a per-thread property, and
every thread and process started later inherits it.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
import threading
from pathlib import Path

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
#: A documentation address (TEST-NET-1, RFC 5737): nothing answers it anywhere.
UNREACHABLE = ("192.0.2.1", 9)


class IsolationError(RuntimeError):
    """The run could not be put in a namespace of its own."""


class _State:
    host_namespace: str | None = None  # the namespace the run started in, once isolated
    deliberate = 0  # attempts the self-test made on purpose


def isolate() -> None:
    """Move this (single-threaded) process into a new network namespace with `lo` up."""
    if threading.active_count() != 1:
        raise IsolationError("a network namespace must be entered before any thread starts")
    before = namespace()
    libc = ctypes.CDLL(None, use_errno=True)
    if os.geteuid() == 0:
        _unshare(libc, _CLONE_NEWNET)
    else:
        uid, gid = os.getuid(), os.getgid()
        _unshare(libc, _CLONE_NEWUSER | _CLONE_NEWNET)
        Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
        Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
    _bring_up("lo")
    _State.host_namespace = before


def _unshare(libc: ctypes.CDLL, flags: int) -> None:
    if libc.unshare(flags) != 0:
        code = ctypes.get_errno()
        raise IsolationError(
            f"cannot enter a network namespace of the run's own ({errno.errorcode[code]}): "
            "run the tests as root, or allow unprivileged user namespaces (on Ubuntu: "
            "sysctl kernel.apparmor_restrict_unprivileged_userns=0)")


def _bring_up(interface: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH", interface.encode(), 0)
        flags = struct.unpack("16sH", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH", interface.encode(),
                                                     flags | _IFF_UP))


def namespace() -> str:
    """This process' network namespace, e.g. "net:[4026531840]"."""
    return os.readlink("/proc/self/ns/net")


def isolated() -> bool:
    return _State.host_namespace is not None and namespace() != _State.host_namespace


def interfaces() -> list[str]:
    """The network interfaces this namespace has."""
    return sorted(name for _, name in socket.if_nameindex())


def attempts_beyond_loopback() -> int:
    """How often anything in this namespace tried to reach an address beyond loopback."""
    snmp = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()
            if line.startswith("Ip:")]
    ipv4 = int(dict(zip(snmp[0], snmp[1], strict=True))["OutNoRoutes"])
    ipv6 = next(int(line.split()[1]) for line in Path("/proc/net/snmp6").read_text().splitlines()
                if line.startswith("Ip6OutNoRoutes"))
    return ipv4 + ipv6


def unexpected_attempts() -> int:
    """Attempts beyond loopback that the self-test did not make on purpose."""
    return attempts_beyond_loopback() - _State.deliberate


def try_to_leave() -> OSError:
    """Connect to an address beyond loopback, on purpose (counted as such); the error."""
    _State.deliberate += 1
    with socket.socket() as sock:
        sock.settimeout(5)
        try:
            sock.connect(UNREACHABLE)
        except OSError as error:
            return error
    raise AssertionError(f"{UNREACHABLE} answered: the run is not isolated")
