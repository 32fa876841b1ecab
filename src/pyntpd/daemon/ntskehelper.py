"""The NTS-KE helper process: TLS handshakes off the loop that serves time.

A TLS 1.3 handshake costs the server about 0.6 ms of CPU (key exchange and signature). On
the serving loop, a flood of 1,600 handshakes a second held NTP requests up for milliseconds
(docs/security.md). chronyd hands NTS-KE to helper processes (`ntsprocesses`, one by
default); pyntpd does the same with one process, forked by the main process once it is
confined (after -i and -u), so the helper runs as the same user in the same jail, and with
no capability at all (the main process may keep CAP_SYS_TIME; the helper needs none).

The helper owns the NTS-KE listening sockets; the main process keeps its copies only to
hand them to a restarted helper, and never accepts on them (the kernel queues connections
while a helper restarts). Between the two runs a Unix stream socket pair with length-prefixed
frames:

    main -> helper   K  the cookie keys (proto.nts text) after every rotation
                     R  the restrict table, pickled, when it changes (the helper trusts its
                        parent; the parent never unpickles anything)
                     H  SIGHUP: reopen the log file, load the certificate and key named
    helper -> main   N  its counters as JSON (at most every COUNTERS_INTERVAL while they
                        change, and at exit), strictly checked: anything else and the main
                        process kills the helper as misbehaving

The helper is supervised: when it dies (or the pair closes) the main process logs why and
forks a new one after a back-off (1 s doubling to 64 s; a helper that ran a minute resets
it). The helper ends with the main process however that ends (PR_SET_PDEATHSIG), and when
the pair closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pickle
import signal
import socket
import struct
import time
from collections.abc import Callable

from pyntpd.daemon import logsetup
from pyntpd.daemon.ntsketls import KeCounters, NtsKeServer
from pyntpd.daemon.privileges import drop_capabilities, set_parent_death_signal
from pyntpd.proto.access import RestrictTable
from pyntpd.proto.nts import CookieKeys

log = logging.getLogger("pyntpd")

FRAME = struct.Struct("!I")
MAX_FROM_HELPER = 65536  # a counters frame is a few hundred bytes
MAX_FROM_MAIN = 16 << 20  # a restrict table of many thousand rules
COUNTERS_INTERVAL = 0.5
STOP_TIMEOUT = 2.0
RESTART_MIN, RESTART_MAX = 1.0, 64.0
REAP_WAIT = 0.05  # s for an exiting helper to become a zombie
STABLE_RUN = 60.0  # s a helper must live for its successor to start without back-off

KEYS, RESTRICT, RELOAD, COUNTERS = b"K", b"R", b"H", b"N"


def frame(kind: bytes, payload: bytes) -> bytes:
    return FRAME.pack(len(payload) + 1) + kind + payload


class FrameReader:
    """Frames out of a byte stream; ValueError for one longer than `limit` or empty."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        self._buffer += data
        frames = []
        while len(self._buffer) >= FRAME.size:
            (length,) = FRAME.unpack_from(self._buffer)
            if not 1 <= length <= self.limit:
                raise ValueError(f"frame of {length} bytes")
            if len(self._buffer) < FRAME.size + length:
                break
            body = bytes(self._buffer[FRAME.size:FRAME.size + length])
            del self._buffer[:FRAME.size + length]
            frames.append((body[:1], body[1:]))
        return frames


# --- the main process's side ---------------------------------------------------------------


class _MainLink(asyncio.Protocol):
    def __init__(self, helper: KeHelper, pid: int) -> None:
        self.helper = helper
        self.pid = pid
        self.reader = FrameReader(MAX_FROM_HELPER)
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            for kind, payload in self.reader.feed(data):
                if kind != COUNTERS:
                    raise ValueError(f"unexpected frame {kind!r}")
                self.helper.current = KeCounters.from_dict(json.loads(payload))
        except (ValueError, RecursionError) as exc:  # JSON and UTF-8 errors are ValueErrors
            log.error("NTS-KE helper (pid %d) sent garbage (%s): killing it", self.pid, exc)
            self.helper.kill(self.pid)
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        self.helper.link_lost(self)


class KeHelper:
    """Forks, feeds and supervises the NTS-KE helper; `counters` sum every helper's."""

    def __init__(self, server: NtsKeServer, prepare_child: Callable[[], None] = lambda: None
                 ) -> None:
        self.server = server
        self.prepare_child = prepare_child  # the child closes what it must not hold
        self.pid: int | None = None
        self.restarts = 0
        self.current = KeCounters()
        self._finished = KeCounters()  # of helpers that have exited
        self._link: _MainLink | None = None
        self._started_at = 0.0
        self._backoff = RESTART_MIN
        self._restart: asyncio.TimerHandle | None = None
        self._stopping = False

    @property
    def counters(self) -> KeCounters:
        return self._finished.plus(self.current)

    async def start(self) -> None:
        """Fork the helper; if that fails (EAGAIN, ENOMEM) say so and try again after the
        back-off: the daemon has already said it is serving, and NTP does not need this."""
        try:
            await self._fork()
        except OSError as exc:
            self._retry_later(f"cannot start the NTS-KE helper: {exc.strerror or exc}")

    def _retry_later(self, why: str) -> None:
        delay, self._backoff = self._backoff, min(RESTART_MAX, self._backoff * 2)
        log.error("%s; trying again in %.0f s", why, delay)
        loop = asyncio.get_running_loop()
        self._restart = loop.call_later(delay, lambda: loop.create_task(self._start_again()))

    async def _fork(self) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        main_pid = os.getpid()
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            raise
        if pid == 0:
            code = 1
            try:
                ours.close()
                code = _helper_main(self.server, theirs, main_pid, self.prepare_child)
            except BaseException:  # never fall back into the main process's code
                with contextlib.suppress(BaseException):
                    log.exception("NTS-KE helper failed")
            finally:
                os._exit(code)
        theirs.close()
        self.pid = pid
        self._started_at = time.monotonic()
        ours.setblocking(False)
        _, link = await loop.create_unix_connection(lambda: _MainLink(self, pid), sock=ours)
        self._link = link
        log.info("NTS-KE served by helper process %d", pid)

    def _send(self, data: bytes) -> None:
        link = self._link
        if link is not None and link.transport is not None and not link.transport.is_closing():
            link.transport.write(data)

    def send_keys(self, keys: CookieKeys) -> None:
        self._send(frame(KEYS, keys.to_text().encode("ascii")))

    def send_restrict(self, table: RestrictTable) -> None:
        self._send(frame(RESTRICT, pickle.dumps(table, protocol=pickle.HIGHEST_PROTOCOL)))

    def reload(self, cert: str, key: str) -> None:
        self._send(frame(RELOAD, os.fsencode(cert) + b"\0" + os.fsencode(key)))

    def kill(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def link_lost(self, link: _MainLink) -> None:
        """The pair closed: the helper has exited (or is made to); reap it and, unless the
        daemon is stopping, start another after the back-off."""
        if link is not self._link:
            return
        self._link = None
        pid, self.pid = link.pid, None
        how = _reap(pid)
        self._finished = self._finished.plus(self.current)
        self.current = KeCounters()
        if self._stopping:
            return
        ran = time.monotonic() - self._started_at
        if ran >= STABLE_RUN:
            self._backoff = RESTART_MIN
        self._retry_later(f"NTS-KE helper (pid {pid}) {how} after {ran:.0f} s")

    async def _start_again(self) -> None:
        self._restart = None
        if self._stopping:
            return
        self.restarts += 1
        await self.start()

    async def stop(self) -> None:
        """SIGTERM, its last counters (bounded wait), reaped; SIGKILL if it lingers."""
        self._stopping = True
        if self._restart is not None:
            self._restart.cancel()
        link = self._link
        if link is None or self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(link.lost), STOP_TIMEOUT)
        except TimeoutError:
            self.kill(link.pid)
            if link.transport is not None:
                link.transport.abort()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(link.lost), STOP_TIMEOUT)

    def close(self) -> None:
        """Without a loop (an exit path that never ran it): kill and reap."""
        self._stopping = True
        if self.pid is not None:
            self.kill(self.pid)
            _reap(self.pid, block=True)
            self.pid = None


def _reap(pid: int, block: bool = False) -> str:
    """How the helper ended, reaped. Its end of the pair closes as it exits, so it is at most
    moments from a zombie; one that closed the pair and lives on is killed (so the loop that
    serves time never waits long here)."""
    deadline = time.monotonic() + (0.0 if block else REAP_WAIT)
    status = None
    while status is None:
        try:
            done, raw = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return "is gone"
        if done:
            status = raw
        elif time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                return "is gone"
        else:
            time.sleep(0.001)
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.WEXITSTATUS(status)}"


# --- the helper's side ---------------------------------------------------------------------


class _HelperLink(asyncio.Protocol):
    def __init__(self, server: NtsKeServer, done: asyncio.Event) -> None:
        self.server = server
        self.done = done
        self.reader = FrameReader(MAX_FROM_MAIN)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        server = self.server
        for kind, payload in self.reader.feed(data):
            if kind == KEYS:
                server.keys.keys[:] = CookieKeys.from_text(payload.decode("ascii")).keys
            elif kind == RESTRICT:
                table = pickle.loads(payload)  # from our own parent only
                if isinstance(table, RestrictTable):
                    server.restrict = table
            elif kind == RELOAD:
                cert, _, key = payload.partition(b"\0")
                server.cert, server.key = os.fsdecode(cert), os.fsdecode(key)
                logsetup.reopen()
                server.reload()

    def connection_lost(self, exc: Exception | None) -> None:
        self.done.set()  # the main process is gone (or closed us): end too

    def report(self, counters: KeCounters) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame(COUNTERS, json.dumps(counters.as_dict()).encode()))


def _helper_main(server: NtsKeServer, sock: socket.socket, main_pid: int,
                 prepare: Callable[[], None]) -> int:
    set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != main_pid:
        return 1  # the main process died before the death signal was armed
    # The main process's handlers would poke its loop; SIGHUP and SIGINT are its to act on
    # (it tells us what to reload), SIGTERM ends us.
    for signum in (signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    prepare()
    drop_capabilities()
    return asyncio.run(_serve(server, sock))


async def _serve(server: NtsKeServer, sock: socket.socket) -> int:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    sock.setblocking(False)
    _, link = await loop.create_unix_connection(lambda: _HelperLink(server, done), sock=sock)
    await server.start()
    sent: dict[str, object] = {}

    def report() -> None:
        nonlocal sent
        now = server.counters.as_dict()
        if now != sent:
            link.report(server.counters)
            sent = now

    async def keep_reporting() -> None:
        while True:
            await asyncio.sleep(COUNTERS_INTERVAL)
            report()

    reporter = loop.create_task(keep_reporting())
    try:
        await done.wait()
    finally:
        reporter.cancel()
        server.close()
        report()
        if link.transport is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(_drained(link.transport), 1.0)
            link.transport.close()
    return 0


async def _drained(transport: asyncio.Transport) -> None:
    while transport.get_write_buffer_size():
        await asyncio.sleep(0.01)
