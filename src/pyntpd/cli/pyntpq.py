"""`pyntpq`: query an NTP daemon over mode 6 (pyntpd, ntpd, ntpsec), ntpq-style.

    pyntpq [-4|-6] [-n] [-i] [-p] [-c CMD]... [--port N] [--timeout S] [--json] [HOST]
    pyntpq --status [HOST]      one line like ntpstat; exit 0 synchronised, 1 not, 2 unknown

Without -c or -p, or with -i, pyntpq reads commands as ntpq does: at an `ntpq> ` prompt with
line editing and history (readline) on a terminal, else one per line from standard input.
There `host HOST`, `hostnames yes|no`, `timeout MS`, `help` and `quit` work as in ntpq.

Commands (-c, in order, -p being `peers`): `rv`/`readvar [ASSOC] [VAR,...]`,
`cv`/`clockvar [ASSOC] [VAR,...]` (a reference clock), `as`/`associations`, `pe`/`peers`,
`mrulist [mincount=N] [laddr=A] [...]`.
"""

from __future__ import annotations

import argparse
import cmd
import contextlib
import json
import math
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pyntpd.cli import ntpqformat as fmt
from pyntpd.proto.control import CERR_UNKNOWNVAR, Opcode
from pyntpd.proto.control_client import (
    Association,
    Collector,
    ControlProtocolError,
    ControlResponseError,
    MruSession,
    Response,
    parse_assocs,
    parse_vars,
    peer_row,
    request,
)
from pyntpd.proto.timestamp import unix_to_ntp

EXIT_OK = 0
EXIT_FAILURE = 1
NTP_PORT = 123
RECV_SIZE = 65536
MAX_DATAGRAMS = 1024  # read per request before giving up on a babbling server
RESOLVE_BUDGET = 2.0  # s for all reverse look-ups of one listing
MAX_LOOKUPS = 256  # addresses resolved per listing; the rest stay numeric
MRU_FILTERS = ("mincount", "laddr", "resall", "resany", "maxlstint", "recent", "limit")


class QueryError(Exception):
    """Anything that stops a command; its text is the whole message."""


class Server:
    """A UDP conversation with one mode 6 server (a connected socket: strays are dropped by
    the kernel and a closed port is reported at once)."""

    def __init__(self, host: str, port: int, family: int, timeout: float) -> None:
        self.label = f"{host} port {port}"
        self.timeout = timeout
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]  # [2001:db8::1], as written in URLs
        try:
            infos = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM)
        except (OSError, UnicodeError) as exc:
            raise QueryError(f"{host}: cannot resolve: {exc}") from None
        infos.sort(key=lambda i: i[0] != socket.AF_INET)  # ntpq tries IPv4 first
        self.sock = self._connect(infos)
        self.sequence = int.from_bytes(os.urandom(2), "big")

    def _connect(self, infos: list[tuple[Any, ...]]) -> socket.socket:
        """The first address this host can use: a name may resolve to a family it lacks
        (IPv6 with ipv6.disable=1 or disabled by sysctl)."""
        failure = ""
        for af, _, _, _, address in infos:
            sock = None
            try:
                sock = socket.socket(af, socket.SOCK_DGRAM)
                sock.connect(address)
            except OSError as exc:
                if sock is not None:
                    sock.close()
                failure = f"{self.label}: {address[0]}: {exc.strerror or exc}"
                continue
            return sock
        raise QueryError(failure or f"{self.label}: no address")

    def close(self) -> None:
        self.sock.close()

    def query(self, opcode: int, associd: int = 0, data: bytes = b"") -> Response:
        """One request and its whole response; one retry as ntpq does."""
        for _attempt in range(2):
            self.sequence = (self.sequence + 1) & 0xFFFF or 1
            try:
                self.sock.send(request(opcode, self.sequence, associd, data))
            except OSError as exc:
                raise QueryError(f"{self.label}: {exc.strerror or exc}") from None
            response = self._collect(Collector(opcode, self.sequence))
            if response is not None:
                return response
        raise QueryError(f"{self.label}: timed out, nothing received")

    def _collect(self, collector: Collector) -> Response | None:
        deadline = time.monotonic() + self.timeout
        for _ in range(MAX_DATAGRAMS):
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                datagram = self.sock.recv(RECV_SIZE)
            except TimeoutError:
                return None
            except OSError as exc:
                raise QueryError(f"{self.label}: {exc.strerror or exc}") from None
            response = collector.add(datagram)
            if response is not None:
                return response
        raise QueryError(f"{self.label}: more than {MAX_DATAGRAMS} datagrams, no answer")


# --- names -----------------------------------------------------------------------------------


def numeric(address: str) -> str:
    return address


def resolver(addresses: Sequence[str]) -> Callable[[str], str]:
    """Reverse look-ups of `addresses`, all within RESOLVE_BUDGET seconds; numeric otherwise.
    Daemon threads: a resolver that hangs never holds up pyntpq's exit."""
    names: dict[str, str] = {}
    unique = [a for a in dict.fromkeys(addresses) if not a.startswith("127.127.")]

    def lookup(address: str) -> None:
        with contextlib.suppress(OSError, UnicodeError, ValueError):
            names[address] = socket.getnameinfo((address, 0), socket.NI_NAMEREQD)[0]

    threads = [threading.Thread(target=lookup, args=(a,), daemon=True)
               for a in unique[:MAX_LOOKUPS]]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + RESOLVE_BUDGET
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0))
    found = dict(names)  # late answers are not used: the listing has one consistent view
    return lambda address: found.get(address, address)


# --- commands --------------------------------------------------------------------------------


@dataclass
class Context:
    server: Server
    names: bool
    as_json: bool
    out: Callable[[str], None]

    def namer(self, addresses: Sequence[str]) -> Callable[[str], str]:
        return resolver(addresses) if self.names else numeric

    def emit(self, text: str, document: dict[str, object]) -> None:
        self.out(json.dumps(document) + "\n" if self.as_json else fmt.printable(text))


def _associations(ctx: Context) -> list[Association]:
    response = ctx.server.query(Opcode.READSTAT)
    try:
        return parse_assocs(response.data)
    except ControlProtocolError as exc:
        raise QueryError(f"{ctx.server.label}: {exc}") from None


def cmd_readvar(ctx: Context, args: Sequence[str]) -> None:
    associd = 0
    rest = list(args)
    if rest and rest[0].isdigit():
        associd = int(rest.pop(0))
        if associd > 0xFFFF:
            raise QueryError(f"association id {associd} out of range")
    wanted = [v for arg in rest for v in arg.split(",") if v.strip()]
    data = ", ".join(v.strip() for v in wanted).encode("ascii", "replace")
    response = ctx.server.query(Opcode.READVAR, associd, data)
    variables = parse_vars(response.data)
    pivot = time.time()
    ctx.emit(fmt.readvar_text(associd, response.status, variables, pivot),
             fmt.readvar_json(associd, response.status, variables, pivot))


def cmd_clockvar(ctx: Context, args: Sequence[str]) -> None:
    """ntpq's `cv [ASSOC] [VAR,...]`: a reference clock's variables (READCLOCK); without
    an association, the system peer's, if that is a reference clock."""
    associd = 0
    rest = list(args)
    if rest and rest[0].isdigit():
        associd = int(rest.pop(0))
        if associd > 0xFFFF:
            raise QueryError(f"association id {associd} out of range")
    wanted = [v for arg in rest for v in arg.split(",") if v.strip()]
    data = ", ".join(v.strip() for v in wanted).encode("ascii", "replace")
    response = ctx.server.query(Opcode.READCLOCK, associd, data)
    variables = parse_vars(response.data)
    ctx.emit(fmt.clockvar_text(response.associd, response.status, variables),
             fmt.clockvar_json(response.associd, response.status, variables, time.time()))


def cmd_associations(ctx: Context, args: Sequence[str]) -> None:
    assocs = _associations(ctx)
    ctx.emit(fmt.assoc_text(assocs), fmt.assoc_json(assocs))


def cmd_peers(ctx: Context, args: Sequence[str]) -> None:
    rows = []
    for assoc in _associations(ctx):
        if not assoc.shown:
            continue
        response = ctx.server.query(Opcode.READVAR, assoc.associd)
        variables = parse_vars(response.data)
        if not variables:
            raise QueryError(f"no information returned for association {assoc.associd}")
        rows.append(peer_row(assoc, variables, unix_to_ntp(time.time())))
    namer = ctx.namer([r.srcadr for r in rows])
    ctx.emit(fmt.peers_text(rows, namer), fmt.peers_json(rows, namer))


def cmd_mrulist(ctx: Context, args: Sequence[str]) -> None:
    params = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in MRU_FILTERS or not value or any(c in value for c in ", \"="):
            raise QueryError(f"mrulist: unsupported option {arg!r} "
                             f"(known: {', '.join(k + '=' for k in MRU_FILTERS)})")
        params[key] = value
    session = MruSession(params=params)
    session.take_nonce(ctx.server.query(Opcode.REQ_NONCE).data)
    restarted = False
    while True:
        try:
            response = ctx.server.query(Opcode.READ_MRU, 0, session.next_request())
        except ControlResponseError as exc:
            if exc.code != CERR_UNKNOWNVAR or restarted or not session.newest:
                raise
            restarted = True
            session.restart()
            continue
        if session.feed(response.data):
            break
    assert session.now is not None
    entries = list(session.entries.values())
    pivot = time.time()
    namer = ctx.namer([e.addr for e in entries])
    ctx.emit(fmt.mrulist_text(entries, session.now, namer),
             fmt.mrulist_json(entries, session.now, pivot))


COMMANDS: dict[str, Callable[[Context, Sequence[str]], None]] = {
    "readvar": cmd_readvar, "rv": cmd_readvar,
    "clockvar": cmd_clockvar, "cv": cmd_clockvar,
    "associations": cmd_associations, "as": cmd_associations,
    "peers": cmd_peers, "pe": cmd_peers,
    "mrulist": cmd_mrulist,
}


def run_command(ctx: Context, line: str) -> None:
    words = line.split()
    if not words:
        raise QueryError("empty command")
    command = COMMANDS.get(words[0])
    if command is None:
        raise QueryError(f"unknown command {words[0]!r} (known: {', '.join(sorted(COMMANDS))})")
    command(ctx, words[1:])


def ntpstat(server: Server) -> tuple[int, str]:
    response = server.query(Opcode.READVAR)
    system = parse_vars(response.data)
    peer = None
    peer_id = system.get("peer", "0")
    if peer_id.isdigit() and 0 < int(peer_id) <= 0xFFFF:
        try:
            peer = parse_vars(server.query(Opcode.READVAR, int(peer_id)).data)
        except ControlResponseError:
            peer = None  # gone since: the system variables alone still tell
    return fmt.sync_status(response.status, system, peer)


# --- main -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyntpq", description=__doc__.split("\n\n")[0])
    p.add_argument("host", nargs="?", default="localhost")
    family = p.add_mutually_exclusive_group()
    family.add_argument("-4", dest="family", action="store_const", const=socket.AF_INET,
                        help="IPv4 only")
    family.add_argument("-6", dest="family", action="store_const", const=socket.AF_INET6,
                        help="IPv6 only")
    p.add_argument("-n", "--numeric", action="store_true", help="show addresses, not names")
    p.add_argument("-i", "--interactive", action="store_true",
                   help="read commands at a prompt (after any -c), as ntpq -i")
    p.add_argument("-p", "--peers", dest="commands", action="append_const", const="peers",
                   help="print the peers billboard (same as -c peers)")
    p.add_argument("-c", "--command", dest="commands", action="append", metavar="CMD",
                   help="rv [ASSOC] [VARS], as, peers, mrulist [OPTIONS]; repeatable")
    p.add_argument("--port", type=int, default=NTP_PORT, help="UDP port (default 123)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait per request")
    p.add_argument("--json", action="store_true", help="one JSON document per command")
    p.add_argument("--status", action="store_true",
                   help="one line like ntpstat; exit 0 synchronised, 1 not, 2 unknown")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 < args.port < 65536:
        print(f"pyntpq: bad port {args.port}", file=sys.stderr)
        return fmt.EXIT_UNKNOWN if args.status else EXIT_FAILURE
    if not math.isfinite(args.timeout) or args.timeout <= 0:
        print(f"pyntpq: bad timeout {args.timeout}", file=sys.stderr)
        return fmt.EXIT_UNKNOWN if args.status else EXIT_FAILURE
    timeout = min(max(args.timeout, 0.05), 60.0)
    try:
        server = Server(args.host, args.port, args.family or socket.AF_UNSPEC, timeout)
    except QueryError as exc:
        print(f"pyntpq: {exc}", file=sys.stderr)
        return fmt.EXIT_UNKNOWN if args.status else EXIT_FAILURE
    try:
        if args.status:
            return _status(server)
        return _commands(server, args)
    except KeyboardInterrupt:
        return 130
    finally:
        server.close()


def _status(server: Server) -> int:
    try:
        code, line = ntpstat(server)
    except (QueryError, ControlResponseError, ControlProtocolError) as exc:
        print(f"unknown: {exc}")
        return fmt.EXIT_UNKNOWN
    print(fmt.printable(line))
    return code


def _commands(server: Server, args: argparse.Namespace) -> int:
    ctx = Context(server, names=not args.numeric, as_json=args.json, out=sys.stdout.write)
    status = EXIT_OK
    for line in args.commands or []:
        if not _run_line(ctx, line):
            status = EXIT_FAILURE
    if args.interactive or not args.commands:
        shell = Shell(ctx, args.port, args.family or socket.AF_UNSPEC,
                      prompt=args.interactive or sys.stdin.isatty())
        shell.cmdloop()
        ctx.server.close()  # the one `host` left open (main closes the first)
    return status


def _run_line(ctx: Context, line: str) -> bool:
    try:
        run_command(ctx, line)
    except (QueryError, ControlResponseError, ControlProtocolError) as exc:
        print(f"pyntpq: {exc}", file=sys.stderr)
        return False
    finally:
        sys.stdout.flush()
    return True


class Shell(cmd.Cmd):
    """ntpq's interactive mode: its prompt, its commands, `host` to change server. The
    readline module, when present, gives line editing and the session's history."""

    def __init__(self, ctx: Context, port: int, family: int, prompt: bool) -> None:
        if prompt:
            with contextlib.suppress(ImportError):
                import readline  # noqa: F401  (input() edits lines and keeps history)
        super().__init__()
        self.ctx, self.port, self.family = ctx, port, family
        self.prompt = "ntpq> " if prompt else ""
        self.first = ctx.server  # main() closes it; later ones are ours

    def emptyline(self) -> bool:
        return False  # ntpq does nothing on an empty line (cmd.Cmd would repeat the last)

    def default(self, line: str) -> bool:
        _run_line(self.ctx, line)
        return False

    def do_host(self, arg: str) -> bool:
        """host HOST: send the following commands to HOST."""
        words = arg.split()
        if len(words) != 1:
            print(f"current host is {self.ctx.server.label}")
            return False
        try:
            server = Server(words[0], self.port, self.family, self.ctx.server.timeout)
        except QueryError as exc:
            print(f"pyntpq: {exc}", file=sys.stderr)
            return False
        if self.ctx.server is not self.first:
            self.ctx.server.close()
        self.ctx.server = server
        print(f"current host set to {words[0]}")
        return False

    def do_hostnames(self, arg: str) -> bool:
        """hostnames yes|no: show names (yes) or numeric addresses (no)."""
        if arg.strip() in ("yes", "no"):
            self.ctx.names = arg.strip() == "yes"
        print(f"resolved hostnames being shown: {'yes' if self.ctx.names else 'no'}")
        return False

    def do_timeout(self, arg: str) -> bool:
        """timeout MS: how long to wait for each answer, in milliseconds."""
        with contextlib.suppress(ValueError):
            ms = float(arg)
            if math.isfinite(ms) and ms > 0:
                self.ctx.server.timeout = min(max(ms / 1000, 0.05), 60.0)
        print(f"primary timeout {self.ctx.server.timeout * 1000:.0f} ms")
        return False

    def do_quit(self, arg: str) -> bool:
        """quit: leave pyntpq."""
        return True

    do_exit = do_quit

    def do_EOF(self, arg: str) -> bool:
        if self.prompt:
            print()
        return True

    def do_help(self, arg: str) -> bool:
        if arg:
            super().do_help(arg)
            return False
        names = sorted({*COMMANDS, "host", "hostnames", "timeout", "quit", "exit", "help"})
        print("Commands: " + ", ".join(names))
        return False


if __name__ == "__main__":
    sys.exit(main())
