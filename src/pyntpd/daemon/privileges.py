"""Dropping root (`-u user[:group]`) and confining the filesystem view (`-i dir`).

The daemon needs root only to bind port 123 and to discipline the clock. The sockets are bound
before we get here; the clock needs CAP_SYS_TIME for as long as we run. So after this module
the process runs as the unprivileged user with CAP_SYS_TIME as its only capability, in its
permitted, effective and bounding sets, with no inheritable or ambient capabilities and with
no_new_privs set, so neither a setuid binary nor file capabilities can give any of it back.

Capabilities are per thread in Linux: capset() and PR_SET_KEEPCAPS touch only the calling
thread. So the drop refuses to run once the process has a second thread, which would keep root.
"""

from __future__ import annotations

import contextlib
import ctypes
import grp
import os
import pwd
from dataclasses import dataclass

CAP_SYS_TIME = 25

_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_PR_SET_PDEATHSIG = 1
_PR_SET_KEEPCAPS = 8
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
# What kernels older than /proc/sys/kernel/cap_last_cap (pre-3.2) know about.
_FALLBACK_CAP_LAST_CAP = 36


class PrivilegeError(Exception):
    """The requested identity or confinement cannot be set up; message for the administrator."""


@dataclass(frozen=True)
class Identity:
    """A resolved -u target: numeric ids, resolved while the user database is still reachable."""

    uid: int
    gid: int
    name: str


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    # The global namespace, not "libc.so.6", so an LD_PRELOAD interposer sees these calls.
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
        libc.prctl.restype = ctypes.c_int
        libc.capset.argtypes = [ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData)]
        libc.capset.restype = ctypes.c_int
        _libc = libc
    return _libc


def _prctl(option: int, arg2: int = 0, arg3: int = 0) -> None:
    if _lib().prctl(option, arg2, arg3, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _capset(mask: int) -> None:
    """Set permitted = effective = `mask`, inheritable = none, for the calling thread."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        word = (mask >> (32 * i)) & 0xFFFF_FFFF
        data[i].effective = word
        data[i].permitted = word
        data[i].inheritable = 0
    if _lib().capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _cap_last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return _FALLBACK_CAP_LAST_CAP


def current_capabilities() -> dict[str, int]:
    """The Cap* lines of /proc/self/status (CapInh, CapPrm, CapEff, CapBnd, CapAmb) as ints.

    Also "NoNewPrivs" (0 or 1) when the kernel reports it. Describes the calling thread's
    process view, which is what matters for a single-threaded daemon.
    """
    caps: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.startswith("Cap"):
                caps[key] = int(value.strip(), 16)
            elif key == "NoNewPrivs":
                caps[key] = int(value.strip())
    return caps


def parse_user_spec(spec: str) -> tuple[str, str | None]:
    """ntpd's `-u user[:group]` argument -> (user, group or None)."""
    user, sep, group = spec.partition(":")
    if not user or (sep and not group):
        raise PrivilegeError(f"-u {spec!r}: expected user or user:group")
    return user, group or None


def resolve_identity(user: str, group: str | None = None) -> Identity:
    """Resolve a user (name or uid) and group (name or gid; default: the user's primary group).

    A numeric uid must exist in the user database (as in ntpd); a numeric gid need not, so a
    dedicated group id can be used without an /etc/group entry.
    """
    try:
        pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, OverflowError, ValueError):
        what = "user ID" if user.isdigit() else "user"
        raise PrivilegeError(f"-u: cannot find {what} {user!r}") from None
    if group is None:
        gid = pw.pw_gid
    elif group.isdigit():
        gid = int(group)
        if gid >= 0xFFFF_FFFF:  # (gid_t)-1 means "unchanged" to the kernel
            raise PrivilegeError(f"-u: group ID {group} is out of range")
    else:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise PrivilegeError(f"-u: cannot find group {group!r}") from None
    return Identity(uid=pw.pw_uid, gid=gid, name=pw.pw_name)


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def _drop_bounding_set(keep: int) -> None:
    for cap in range(_cap_last_cap() + 1):
        if keep >> cap & 1:
            continue
        # EINVAL: the kernel does not know this cap; EPERM: no CAP_SETPCAP (a container that
        # already took it). capset() below takes them out of the permitted set anyway.
        with contextlib.suppress(OSError):
            _prctl(_PR_CAPBSET_DROP, cap)


def drop_privileges(
    user: str | Identity, group: str | None = None, keep_sys_time: bool = True
) -> Identity:
    """Become `user` (and `group`), keeping only CAP_SYS_TIME (or nothing), irreversibly.

    `user` may be a name, a numeric uid, or an Identity resolved earlier (needed with `-i`:
    the user database is usually not inside the chroot). Must be called as root, after the
    sockets are bound and before any thread is started. Returns the identity taken.
    """
    ident = user if isinstance(user, Identity) else resolve_identity(user, group)
    if os.geteuid() != 0:
        raise PrivilegeError(f"-u {ident.name} needs root: pyntpd is running as uid {os.geteuid()}")
    if _thread_count() > 1:
        raise PrivilegeError(
            "cannot drop privileges: the process already has several threads, and "
            "capabilities would stay with the others"
        )
    keep = 1 << CAP_SYS_TIME if keep_sys_time else 0
    try:
        # While still fully privileged: the bounding set needs CAP_SETPCAP to shrink.
        _drop_bounding_set(keep)
        with contextlib.suppress(OSError):  # kernels before 4.3 have no ambient set
            _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
        # Without KEEPCAPS, setuid() away from 0 empties the permitted set, CAP_SYS_TIME too.
        _prctl(_PR_SET_KEEPCAPS, 1 if keep else 0)
        os.setgroups([ident.gid])
        os.setgid(ident.gid)
        os.setuid(ident.uid)
        _capset(keep)
        _prctl(_PR_SET_KEEPCAPS, 0)
        _prctl(_PR_SET_NO_NEW_PRIVS, 1)
    except OSError as exc:
        raise PrivilegeError(
            f"cannot drop privileges to {ident.name} (uid {ident.uid}, gid {ident.gid}): "
            f"{exc.strerror}"
        ) from None
    # setuid() as root sets the saved ids too, but verify rather than trust.
    if os.getresuid() != (ident.uid,) * 3 or os.getresgid() != (ident.gid,) * 3:
        raise PrivilegeError(f"privileges were not fully dropped to {ident.name}")
    return ident


def drop_capabilities() -> None:
    """Give up every capability for good, whatever the user (a helper process that needs
    none: as root without -u this leaves uid 0 without its powers). Best effort for the
    bounding set (EPERM once CAP_SETPCAP is gone, which -u already saw to); the permitted
    and effective sets are emptied or OSError is raised."""
    _drop_bounding_set(0)
    with contextlib.suppress(OSError):
        _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
    _capset(0)
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)


def set_parent_death_signal(signum: int) -> None:
    """Have the kernel send `signum` to this process when its parent dies (worker processes
    must not outlive the main one, however it ends)."""
    _prctl(_PR_SET_PDEATHSIG, signum)


def chroot_to(path: str | os.PathLike[str]) -> None:
    """ntpd's `-i dir`: confine the filesystem view to `path`. Call before drop_privileges."""
    target = os.fspath(path)
    try:
        os.chdir(target)
    except OSError as exc:
        raise PrivilegeError(f"-i {target}: {exc.strerror}") from None
    try:
        os.chroot(".")
    except PermissionError:
        raise PrivilegeError(
            f"-i {target}: chroot needs root (pyntpd is running as uid {os.geteuid()})"
        ) from None
    except OSError as exc:
        raise PrivilegeError(f"-i {target}: cannot chroot: {exc.strerror}") from None
    # The working directory must be inside the new root, or ".." walks back out.
    os.chdir("/")
