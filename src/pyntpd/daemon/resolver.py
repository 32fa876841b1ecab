"""Name lookups for the daemon's sources: on the event loop, or, with -i, from a helper
process that stays outside the jail.

A name lookup needs the C library's view of the host: /etc/nsswitch.conf, /etc/hosts,
/etc/resolv.conf (which change while the daemon runs) and whatever NSS modules they name.
Inside a chroot none of that is there, so a jailed daemon would never resolve a server or
pool name again. ntpd forks its resolver before the chroot for the same reason
(NEED_EARLY_FORK in ntpd.c). So does pyntpd: `ResolverProcess.start` forks, before the
chroot, a process that keeps the real file system view, gives up every capability (and
becomes the -u user), and answers one lookup at a time over a socket pair. It holds no
descriptor but its end of the pair and knows nothing but names.

The protocol is one JSON object per SOCK_SEQPACKET message, both ways, each bounded.
The daemon bounds what it waits for: at most MAX_PENDING lookups at once, each for at most
LOOKUP_TIMEOUT. Should the helper die (it is never restarted: a process forked inside the
jail would be jailed too), lookups fall back to the event loop's resolver inside the jail,
and the log says once what that needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable

from pyntpd.daemon.privileges import (
    Identity,
    drop_capabilities,
    drop_privileges,
    set_parent_death_signal,
)

log = logging.getLogger("pyntpd")

MAX_MESSAGE = 4096
MAX_NAME = 253  # a DNS name's longest text form
MAX_ADDRESSES = 32
MAX_PENDING = 64
LOOKUP_TIMEOUT = 30.0  # getaddrinfo's own worst case: resolv.conf timeout x attempts x servers

Lookup = Callable[[str, int, int], Awaitable[list[str]]]


def addresses_of(infos: list[tuple[object, ...]]) -> list[str]:
    """The distinct IPv4/IPv6 addresses of getaddrinfo()'s answer, in its order."""
    seen: list[str] = []
    for info in infos:
        family, sockaddr = info[0], info[4]
        if family in (socket.AF_INET, socket.AF_INET6):
            address = str(sockaddr[0])  # type: ignore[index]
            if address not in seen:
                seen.append(address)
    return seen[:MAX_ADDRESSES]


async def lookup_here(host: str, port: int, family: int) -> list[str]:
    """getaddrinfo() on the event loop's executor, in this process."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, family=family,
                                                          type=socket.SOCK_DGRAM)
    return addresses_of(infos)  # type: ignore[arg-type]


# --- the helper process ---------------------------------------------------------------------


def answer(request: bytes, resolve: Callable[..., list[tuple[object, ...]]] = socket.getaddrinfo
           ) -> bytes:
    """One request -> one reply, whatever the request holds or the lookup raises."""
    ident = 0
    try:
        query = json.loads(request)
        ident = query["id"]
        host, port, family = query["host"], query["port"], query["family"]
        if not (isinstance(ident, int) and isinstance(host, str) and isinstance(port, int)
                and family in (socket.AF_UNSPEC, socket.AF_INET, socket.AF_INET6)
                and 0 < len(host) <= MAX_NAME and 0 <= port <= 65535):
            raise ValueError("malformed request")
        addresses = addresses_of(resolve(host, port, family, socket.SOCK_DGRAM))
        reply: dict[str, object] = {"id": ident, "addresses": addresses}
    except OSError as exc:
        reply = {"id": ident, "errno": exc.errno or 0, "error": exc.strerror or str(exc)}
    except (ValueError, KeyError, TypeError, UnicodeError) as exc:
        reply = {"id": ident, "errno": errno.EINVAL, "error": f"bad request: {exc}"}
    except Exception as exc:  # one failed lookup must not end the helper
        reply = {"id": ident, "errno": errno.EIO, "error": f"{type(exc).__name__}: {exc}"}
    return json.dumps(reply).encode("ascii")


def _helper_main(sock: socket.socket, parent: int, identity: Identity | None) -> None:
    # However the daemon ends, this process ends with it; it never acts on the terminal's
    # signals (the daemon does) and never touches a descriptor of the daemon's.
    set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent:
        return
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL if signum == signal.SIGTERM else signal.SIG_IGN)
    keep = sock.fileno()
    os.closerange(3, keep)
    os.closerange(keep + 1, max(os.sysconf("SC_OPEN_MAX"), 1 << 16))
    if identity is not None:
        drop_privileges(identity, keep_sys_time=False)
    elif os.geteuid() == 0:
        drop_capabilities()
    while True:
        try:
            request = sock.recv(MAX_MESSAGE)
        except InterruptedError:
            continue
        if not request:
            return  # the daemon closed its end: it is exiting
        sock.send(answer(request))


class ResolverProcess:
    """The daemon's end of the helper: `lookup` is a `Lookup`."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.sock: socket.socket | None = sock
        self.pid = pid
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[list[str]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fallback_said = False

    @classmethod
    def start(cls, identity: Identity | None) -> ResolverProcess:
        """Fork the helper; call before the chroot, while the daemon is single-threaded."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                ours.close()
                _helper_main(theirs, parent, identity)
            except BaseException:  # never fall back into the daemon's code path
                code = 1
            os._exit(code)
        theirs.close()
        ours.setblocking(False)
        return cls(ours, pid)

    async def lookup(self, host: str, port: int, family: int) -> list[str]:
        if self.sock is None:
            if not self._fallback_said:
                self._fallback_said = True
                log.error("the resolver process is gone: names are looked up inside the jail "
                          "(-i) from now on, which needs /etc/hosts, /etc/resolv.conf and "
                          "/etc/nsswitch.conf there; restart pyntpd to get it back")
            return await lookup_here(host, port, family)
        if len(self._pending) >= MAX_PENDING:
            raise OSError(errno.EAGAIN, "too many name lookups at once")
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            loop.add_reader(self.sock.fileno(), self._readable)
        if len(host) > MAX_NAME:
            raise OSError(errno.EINVAL, "name too long")
        ident = next(self._ids)
        request = json.dumps({"id": ident, "host": host, "port": port, "family": family})
        try:
            self.sock.send(request.encode("utf-8"))
        except BlockingIOError:
            raise OSError(errno.EAGAIN, "the resolver is busy") from None
        except OSError:
            self._gone()  # it died before we heard its end: no answer will come
            return await self.lookup(host, port, family)
        future: asyncio.Future[list[str]] = loop.create_future()
        self._pending[ident] = future
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT):
                return await future
        except TimeoutError:
            raise OSError(errno.ETIMEDOUT, "the resolver did not answer in time") from None
        finally:
            self._pending.pop(ident, None)

    def _readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        for _ in range(MAX_PENDING):
            try:
                data = sock.recv(MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._gone()
                return
            self._settle(data)

    def _settle(self, data: bytes) -> None:
        try:
            reply = json.loads(data)
            future = self._pending.get(reply["id"])
        except (ValueError, KeyError, TypeError):
            return
        if future is None or future.done():
            return  # timed out meanwhile
        if "addresses" in reply:
            future.set_result([str(a) for a in reply["addresses"]][:MAX_ADDRESSES])
        else:
            future.set_exception(socket.gaierror(int(reply.get("errno", 0)),
                                                 str(reply.get("error", "lookup failed"))))

    def _gone(self) -> None:
        code = self._reap(0.0)
        log.error("the resolver process exited%s", "" if code is None else f" ({code})")
        self._close_socket()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(OSError(errno.EPIPE, "the resolver process exited"))

    def _close_socket(self) -> None:
        if self.sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None

    def _reap(self, wait: float) -> str | None:
        """The helper's exit as text once it has exited (within `wait` s), else None."""
        deadline = time.monotonic() + wait
        while True:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return "already reaped"
            if pid:
                if os.WIFSIGNALED(status):
                    return f"killed by signal {os.WTERMSIG(status)}"
                return f"exit status {os.waitstatus_to_exitcode(status)}"
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.01)

    def forget(self) -> None:
        """A forked worker's copy: close it, never reap (the helper is not its child)."""
        self._loop = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def close(self) -> None:
        """Exiting: closing our end makes the helper return; kill it if it is stuck."""
        self._close_socket()
        if self.pid and self._reap(1.0) is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self._reap(1.0)
        self.pid = 0
