"""`--metrics [ADDR:]PORT`: a small HTTP/1.1 endpoint for Prometheus and for JSON status;
`--status-socket PATH`: the same JSON on a Unix socket (connect, read until EOF).

    GET /metrics                 Prometheus text format 0.0.4, or OpenMetrics 1.0 when the
                                 Accept header asks for it (proto.metrics_text)
    GET /status, /status.json    the same state as JSON

Bounded in every direction, because it shares the event loop with the serving path: the
request head is at most 8 KiB and must arrive within READ_TIMEOUT of the accept, a
connection lives at most CONNECTION_TIMEOUT from its accept whatever it does, every reply
closes its connection (no keep-alive), and any failure is counted
(ntp_metrics_http_requests_total{outcome=...}) instead of propagating. At most
MAX_CONNECTIONS are open at once; when all are taken, a new connection takes the place of
the oldest one that has not sent its request yet (or, failing that, of the oldest that was
already answered), so idle connections cannot keep a scrape out (`Slots`). The listening
socket is opened at start-up, before privileges are dropped, so a bind error stops the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import re
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import replace

from pyntpd import __version__
from pyntpd.daemon.ipfamilies import family_name, no_family
from pyntpd.daemon.mode6 import ControlService
from pyntpd.daemon.ntsketls import KeCounters
from pyntpd.proto.metrics_text import (
    CONTENT_TYPE,
    OPENMETRICS_TYPE,
    BroadcastCounts,
    Status,
    exposition,
    openmetrics_exposition,
    status_document,
    wants_openmetrics,
)
from pyntpd.proto.server import Responder

log = logging.getLogger("pyntpd.metrics")

MAX_HEAD = 8192
READ_TIMEOUT = 2.0  # s from the accept to the end of the request head
CONNECTION_TIMEOUT = 5.0  # s from the accept to the close, whatever the client does
WRITE_TIMEOUT = 5.0
MAX_CONNECTIONS = 16
LINGER_TIME = 1.0  # s a closing connection may still send before it is closed
LINGER_BYTES = 65536
JSON_TYPE = "application/json"

_REQUEST_LINE = re.compile(r"([A-Z]{1,16}) (/[!-~]*) HTTP/1\.[01]")
_HEADER = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t -~\x80-\xff]*")
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 503: "Service Unavailable"}
ROUTES = {"/metrics": "metrics", "/status": "status", "/status.json": "status"}


class MetricsBindError(Exception):
    """The endpoint cannot listen; the message is for the administrator."""


def listen(host: str, port: int) -> socket.socket:
    """A listening, non-blocking TCP socket on host:port (IPv6 only for an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
    sock = None
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(64)
        sock.setblocking(False)
    except OSError as exc:
        if sock is not None:
            sock.close()
        # The address is the administrator's own choice: say why it cannot be had here
        # rather than quietly serve somewhere else.
        hint = ""
        if no_family(exc):
            hint = f" ({family_name(family)} is not available on this host)"
        elif exc.errno == errno.EADDRNOTAVAIL:
            hint = " (no interface has this address)"
        raise MetricsBindError(
            f"cannot serve metrics on {where} (--metrics): {exc.strerror or exc}{hint}"
        ) from None
    return sock


def listen_unix(path: str) -> tuple[socket.socket, int]:
    """A listening Unix socket at `path`, mode 0600, and its inode. An existing socket is
    replaced only when nothing answers on it (left by a crash); anything else at the path,
    a symlink included, is never touched: bind() does not follow the last component."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise MetricsBindError(f"cannot create status socket {path}: {exc.strerror}") from None
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise MetricsBindError(
                f"cannot create status socket {path}: something else is there (not a socket); "
                "remove it or choose another path")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(path)
            except ConnectionRefusedError:
                os.unlink(path)  # stale
            except OSError:
                pass
            else:
                raise MetricsBindError(f"cannot create status socket {path}: another process "
                                       "is listening on it")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # created 0600: the state is for this host's administrator
    try:
        sock.bind(path)
        sock.listen(16)
        sock.setblocking(False)
        inode = os.lstat(path).st_ino
    except OSError as exc:
        sock.close()
        raise MetricsBindError(f"cannot create status socket {path}: {exc.strerror}") from None
    finally:
        os.umask(old_umask)
    return sock, inode


class Endpoints:
    """The opt-in status endpoints: opened at start-up (before privileges are dropped),
    served by the main process only."""

    def __init__(self, metrics: tuple[str, int] | None, status_socket: str | None) -> None:
        self.tcp = listen(*metrics) if metrics else None
        self.unix_path = status_socket
        self.unix: socket.socket | None = None
        self._inode = 0
        if status_socket:
            try:
                self.unix, self._inode = listen_unix(status_socket)
            except MetricsBindError:
                self.release()
                raise
        self.http: MetricsServer | None = None
        self._unix_server: asyncio.Server | None = None

    def release(self, keep_path: bool = False) -> None:
        """Close the listening sockets and remove the status socket's path, unless
        `keep_path` (a worker process closing the copies it inherited)."""
        for sock in (self.tcp, self.unix):
            if sock is not None:
                sock.close()
        self.tcp = self.unix = None
        if self.unix_path and self._inode and not keep_path:
            self._inode, inode = 0, self._inode
            # Only our own socket: the path may have been replaced meanwhile. After -u or -i
            # this can fail; the next start replaces the stale socket.
            try:
                if os.lstat(self.unix_path).st_ino == inode:
                    os.unlink(self.unix_path)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    log.warning("cannot remove status socket %s: %s", self.unix_path,
                                exc.strerror)

    async def start(self, collect: Callable[[], Status]) -> None:
        if self.tcp is not None:
            self.http = MetricsServer(self.tcp, collect)
            await self.http.start()
        if self.unix is not None:
            self._unix_server = await asyncio.start_unix_server(
                lambda r, w: self._send_status(collect, w), sock=self.unix)
            log.info("JSON status on Unix socket %s", self.unix_path)

    async def _send_status(self, collect: Callable[[], Status],
                           writer: asyncio.StreamWriter) -> None:
        try:
            document = json.dumps(status_document(collect()), indent=2, allow_nan=False)
            writer.write((document + "\n").encode("utf-8"))
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
        except Exception:  # a stuck or vanished reader must not matter to the daemon
            log.debug("status socket client failed", exc_info=True)
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.close()
        if self._unix_server is not None:
            self._unix_server.close()
        self.release()


class BadRequest(Exception):
    def __init__(self, status: int, outcome: str) -> None:
        super().__init__(outcome)
        self.status = status
        self.outcome = outcome


def parse_head(head: bytes) -> tuple[str, str, str]:
    """(method, path, Accept header) of a request head ending in CRLF CRLF; BadRequest
    otherwise."""
    lines = head.decode("latin-1").split("\r\n")
    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        raise BadRequest(400, "bad_request")
    accept = ""
    for line in lines[1:]:
        if line and _HEADER.fullmatch(line) is None:
            raise BadRequest(400, "bad_request")
        name, _, value = line.partition(":")
        if name.lower() == "accept":
            accept = value.strip()
    method, target = match.groups()
    return method, target.split("?", 1)[0], accept


def response(status: int, body: bytes = b"", content_type: str = "text/plain; charset=utf-8",
             head_only: bool = False, extra: str = "") -> bytes:
    head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n{extra}"
            "Connection: close\r\n\r\n")
    return head.encode("ascii") + (b"" if head_only else body)


def collector(responder: Responder, control: ControlService, start_time: float,
              time_ns: Callable[[], int] = time.time_ns,
              nts_ke: Callable[[], KeCounters] | None = None) -> Callable[[], Status]:
    """Status from the live daemon: the mode 6 snapshot without its MRU list, the counters
    (`nts_ke`: the NTS-KE server's, when it runs)."""

    def collect() -> Status:
        now_ns = time_ns()
        sync = control.synchroniser()
        broadcast = None
        if sync is not None:
            sender, client = sync.broadcaster, sync.broadcast_client
            broadcast = BroadcastCounts(
                sent=sender.sent, unsynchronised=sender.unsynchronised,
                send_errors=sender.send_errors,
                heard=dict(client.counts) if client is not None else {})
        status = Status.build(
            control.snapshot(now_ns), control.counters(),
            version=f"pyntpd {__version__}", start_time=start_time, now=now_ns / 1e9,
            control_requests=control.requests, mru_entries=len(responder.access.mru),
            broadcast=broadcast, control_dropped=control.control.drops,
            interleaved_kept=len(responder.transmit_log))
        if nts_ke is not None:
            counts = nts_ke().as_dict()
            errors = counts.pop("errors")
            assert isinstance(errors, dict)
            status = replace(status, nts_ke={k: int(v) for k, v in counts.items()},  # type: ignore[call-overload]
                             nts_ke_errors=dict(errors))
        return status

    return collect


class Slots:
    """The connections the endpoint holds, in the order they were accepted, each waiting
    for its request, being answered, or answered (lingering until the client closes).

    `admit` makes room for a new connection when all slots are taken: the oldest waiting
    connection goes, else the oldest answered one; one being answered is never cut off.
    So a client that opens connections and sends nothing can hold them only until the
    next client comes, and a scrape always gets in."""

    WAITING, ANSWERING, ANSWERED = "waiting", "answering", "answered"

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[object, str] = {}

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, key: object) -> bool:
        return key in self._held

    def admit(self, key: object) -> tuple[bool, object | None]:
        """(admitted, the connection evicted for it, if any)."""
        victim = None
        if len(self._held) >= self.limit:
            victim = self._oldest(self.WAITING) or self._oldest(self.ANSWERED)
            if victim is None:
                return False, None
            del self._held[victim]
        self._held[key] = self.WAITING
        return True, victim

    def _oldest(self, state: str) -> object | None:
        return next((key for key, held in self._held.items() if held == state), None)

    def mark(self, key: object, state: str) -> None:
        if key in self._held:
            self._held[key] = state

    def release(self, key: object) -> None:
        self._held.pop(key, None)


class MetricsServer:
    def __init__(self, sock: socket.socket, collect: Callable[[], Status], *,
                 read_timeout: float = READ_TIMEOUT,
                 connection_timeout: float = CONNECTION_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        self.sock = sock
        self.collect = collect
        self.read_timeout = min(read_timeout, connection_timeout)
        self.connection_timeout = connection_timeout
        self.slots = Slots(max_connections)
        self.outcomes: dict[str, int] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def active(self) -> int:
        return len(self.slots)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, sock=self.sock, limit=MAX_HEAD)
        where = self.sock.getsockname()
        log.info("metrics on http://%s:%d/metrics (JSON at /status)",
                 f"[{where[0]}]" if ":" in where[0] else where[0], where[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=1.0)
        self.sock.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        admitted, victim = self.slots.admit(writer)
        if isinstance(victim, asyncio.StreamWriter):
            self.count("evicted")
            victim.transport.abort()
        try:
            if not admitted:
                # Shed at once: no reply (writing one would need reading the request).
                self.count("too_many_connections")
                writer.transport.abort()
                return
            # The deadline counts from the accept, whatever the client sends or reads.
            async with asyncio.timeout(self.connection_timeout):
                await self._serve(reader, writer)
        except asyncio.CancelledError:
            pass
        except TimeoutError:
            if writer in self.slots:
                self.count("deadline")
            writer.transport.abort()
        except Exception:  # the endpoint must never take the daemon down
            if writer in self.slots:  # (an evicted connection's end is counted already)
                self.count("error")
                log.debug("metrics request failed", exc_info=True)
        finally:
            self.slots.release(writer)
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(writer.wait_closed(), WRITE_TIMEOUT)
            if task is not None:
                self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.read_timeout)
        except TimeoutError:
            self.count("timeout")
            await self._finish(reader, writer, response(408, b"request timeout\n"))
            return
        except (asyncio.LimitOverrunError, ValueError):
            self.count("too_large")
            await self._finish(reader, writer,
                               response(431, b"request head larger than 8 KiB\n"))
            return
        except asyncio.IncompleteReadError:
            if writer in self.slots:  # not cut off to make room for another
                self.count("incomplete")
            return
        try:
            method, path, accept = parse_head(head)
            if method not in ("GET", "HEAD"):
                raise BadRequest(405, "method_not_allowed")
            route = ROUTES.get(path)
            if route is None:
                raise BadRequest(404, "not_found")
        except BadRequest as bad:
            self.count(bad.outcome)
            extra = "Allow: GET, HEAD\r\n" if bad.status == 405 else ""
            reply = response(bad.status, f"{_REASONS[bad.status]}\n".encode(), extra=extra)
        else:
            reply = self._render(route, method == "HEAD", wants_openmetrics(accept))
        await self._finish(reader, writer, reply)

    async def _finish(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      reply: bytes) -> None:
        """Send the reply, then read (and discard) what the client still sends, briefly:
        closing with unread input would reset the connection and lose the reply."""
        self.slots.mark(writer, Slots.ANSWERING)
        writer.write(reply)
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
        self.slots.mark(writer, Slots.ANSWERED)
        if writer.can_write_eof():
            writer.write_eof()
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(LINGER_TIME):
                received = 0
                while received < LINGER_BYTES:
                    chunk = await reader.read(LINGER_BYTES)
                    if not chunk:
                        break
                    received += len(chunk)

    def _render(self, route: str, head_only: bool, openmetrics: bool = False) -> bytes:
        try:
            status = replace(self.collect(), http=dict(self.outcomes))
            if route == "metrics" and openmetrics:
                body, kind = openmetrics_exposition(status).encode("utf-8"), OPENMETRICS_TYPE
            elif route == "metrics":
                body, kind = exposition(status).encode("utf-8"), CONTENT_TYPE
            else:
                document = json.dumps(status_document(status), indent=2, allow_nan=False)
                body, kind = (document + "\n").encode("utf-8"), JSON_TYPE
        except Exception:
            self.count("error")
            log.exception("cannot render %s", route)
            return response(500, b"internal error\n")
        self.count("ok")
        return response(200, body, kind, head_only)
