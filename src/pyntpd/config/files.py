"""The only place the config package touches the file system (plus name resolution).

Both functions are defaults for injectable parameters, so tests and fuzzers never need real
files. Reading is bounded: an `includefile /dev/zero` or a FIFO must not hang or exhaust
the daemon at start-up.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import queue
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterable

from .diagnostics import DiagnosticSink, Location

MAX_FILE_SIZE = 1 << 20

ReadFile = Callable[[str], bytes]
FileMode = Callable[[str], "int | None"]
Resolver = Callable[[str, "int | None"], "list[ipaddress.IPv4Address | ipaddress.IPv6Address]"]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def read_file(path: str) -> bytes:
    """Read a regular file of at most MAX_FILE_SIZE bytes; OSError otherwise."""
    # O_NONBLOCK so that opening a FIFO does not wait for a writer.
    fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise OSError(errno.EISDIR, "is a directory", path)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        chunks: list[bytes] = []
        remaining = MAX_FILE_SIZE + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        if len(data) > MAX_FILE_SIZE:
            raise OSError(errno.EFBIG, f"larger than {MAX_FILE_SIZE} bytes", path)
        return data
    finally:
        os.close(fd)


def file_mode(path: str) -> int | None:
    """st_mode of `path`, or None when it cannot be examined."""
    try:
        return os.stat(path).st_mode
    except OSError:
        return None


def resolve(host: str, family: int | None) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Resolve `host` with the system resolver; an empty list when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, None, family or socket.AF_UNSPEC, socket.SOCK_DGRAM)
    except (OSError, UnicodeError, ValueError):
        return []
    seen: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for fam, _type, _proto, _canon, sockaddr in infos:
        if fam not in (socket.AF_INET, socket.AF_INET6):
            continue
        addr = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if addr not in seen:
            seen.append(addr)
    return seen


Query = tuple[str, "int | None"]  # (name, address family or None for either)

# At most this many lookups at once: a file with hundreds of names must not start hundreds of
# threads; with a resolver that never answers, each of them still waits out the budget.
MAX_CONCURRENT_LOOKUPS = 16


class Lookups:
    """Names looked up all at once with one deadline, and a Resolver over the answers.

    The system resolver takes ~10 s to give up on a name when its server never answers
    (glibc: 5 s, twice); one after another, eight names took 80 s. Here every name is asked
    at the same time and nobody waits past the deadline: a name without an answer by then
    is `pending`, and resolves to nothing. Lookups left running go on in daemon threads
    whose answers are ignored; the process need not wait for them to exit."""

    def __init__(self, answers: dict[Query, list[IPAddress]], pending: list[Query],
                 budget: float) -> None:
        self.answers = answers
        self.pending = pending
        self.budget = budget

    def __call__(self, host: str, family: int | None) -> list[IPAddress]:
        return list(self.answers.get(_key(host, family), []))

    def is_pending(self, host: str, family: int | None) -> bool:
        return _key(host, family) not in self.answers and any(
            _key(h, f) == _key(host, family) for h, f in self.pending)


def _key(host: str, family: int | None) -> Query:
    return host.lower(), family


def resolve_all(queries: Iterable[Query], resolve: Resolver = resolve,
                budget: float = 4.0) -> Lookups:
    """Resolve every (name, family) in `queries` concurrently, for at most `budget` s."""
    asked: dict[Query, Query] = {}  # case-folded key -> the name as first written
    for host, family in queries:
        asked.setdefault(_key(host, family), (host, family))
    wanted = list(asked)
    answers: dict[Query, list[IPAddress]] = {}
    todo: queue.SimpleQueue[Query] = queue.SimpleQueue()
    for query in wanted:
        todo.put(query)
    lock = threading.Lock()
    finished = threading.Condition(lock)

    def work() -> None:
        while True:
            try:
                key = todo.get_nowait()
            except queue.Empty:
                return
            try:
                found = resolve(*asked[key])
            except Exception:  # an injected resolver's failure is a name without addresses
                found = []
            with finished:
                answers[key] = found
                finished.notify_all()

    for _ in range(min(len(wanted), MAX_CONCURRENT_LOOKUPS)):
        threading.Thread(target=work, name="resolve", daemon=True).start()
    deadline = time.monotonic() + budget
    with finished:
        while len(answers) < len(wanted):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            finished.wait(left)
        done = dict(answers)
    return Lookups(done, [asked[q] for q in wanted if q not in done], budget)


def describe_os_error(exc: OSError) -> str:
    return exc.strerror or str(exc)


def decode(data: bytes, filename: str, sink: DiagnosticSink) -> str:
    """UTF-8 decode, reporting each line with invalid bytes (once) and replacing them.

    Bad bytes inside a comment only warn: old files often carry Latin-1 comments, and ntpd
    never looked at them.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    out: list[str] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            out.append(raw.decode("utf-8"))
            continue
        except UnicodeDecodeError as exc:
            prefix = raw[: exc.start].decode("utf-8", "replace")
            loc = Location(filename, number, len(prefix) + 1)
            message = f"invalid UTF-8 byte 0x{raw[exc.start]:02X}; replaced with U+FFFD"
            if "#" in prefix:
                sink.warning(loc, message + " (in a comment)")
            else:
                sink.error(loc, message, "save the file as UTF-8")
        out.append(raw.decode("utf-8", "replace"))
    return "\n".join(out)
