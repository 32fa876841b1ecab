"""The client side of NTP mode 6 (RFC 9327), as ntpq uses it: pure, no sockets.

`request` builds a datagram; a `Collector` takes whatever datagrams arrive and reassembles the
one response to that request (fragments in any order, duplicates, strays and absurd headers
ignored, the number of fragments bounded); `parse_vars`/`parse_assocs` read the payloads;
`MruSession` drives ntpd's mrulist handshake (REQ_NONCE, then READ_MRU with continuation) with
a bounded number of rounds. Times come in as arguments.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass, field

from pyntpd.proto.control import (
    CERR_BADASSOC,
    CERR_BADFMT,
    CERR_BADOP,
    CERR_BADVALUE,
    CERR_PERMISSION,
    CERR_UNKNOWNVAR,
    CERR_UNSPEC,
    HEADER_LEN,
    MAX_DATA_LEN,
    PST_BCAST,
    PST_CONFIG,
    PST_REACH,
    SELECT_CODES,
    ControlError,
    ControlHeader,
    encode,
    parse_text,
)
from pyntpd.proto.timestamp import ntp_to_unix

CLIENT_VERSION = 2  # what ntpq 4.2.8 sends (NTP_OLDVERSION + 1)
MAX_FRAGMENTS = 128  # more than any honest server sends for one response
MAX_RESPONSE = 0xFFFF  # offsets are 16 bits: no response is longer
MRU_FRAGS = 16  # fragments asked for per READ_MRU round
MRU_MAX_ROUNDS = 256
MRU_MAX_ENTRIES = 100_000
MRU_PRIORS = 4  # entries named in a continuation request
# "[address%scope]:port": an IPv6 address (45), a scope (an interface name, 15), the rest.
MAX_ADDRESS_TEXT = 70
_NONCE = re.compile(r"[0-9A-Za-z]{1,64}")  # ntpd's are 24 hex digits

ERROR_TEXT: dict[int, str] = {
    CERR_UNSPEC: "server returned an unspecified error",
    CERR_PERMISSION: "server disallowed the request (permission denied)",
    CERR_BADFMT: "server reports a badly formatted request",
    CERR_BADOP: "server reports an unknown opcode",
    CERR_BADASSOC: "association unknown to the server",
    CERR_UNKNOWNVAR: "a requested variable is unknown to the server",
    CERR_BADVALUE: "server reports a bad value in the request",
}

TALLY = {code: char for char, code in SELECT_CODES.items()}
CONDITIONS = ("reject", "falsetick", "excess", "outlier", "candidate", "backup", "sys.peer",
              "pps.peer")


class ControlResponseError(Exception):
    """The server answered with the error bit set; `code` is its CERR_* value."""

    def __init__(self, code: int, associd: int = 0) -> None:
        self.code = code
        self.associd = associd
        text = ERROR_TEXT.get(code, f"server returned error code {code}")
        if code == CERR_BADASSOC and associd:
            text = f"association {associd} unknown to the server"
        super().__init__(text)


class ControlProtocolError(Exception):
    """A response the client cannot use (too many fragments, an endless mrulist...)."""


def request(opcode: int, sequence: int, associd: int = 0, data: bytes = b"",
            version: int = CLIENT_VERSION) -> bytes:
    header = ControlHeader(version=version, opcode=opcode, sequence=sequence & 0xFFFF,
                           associd=associd)
    return encode(header, data)


@dataclass(frozen=True, slots=True)
class Response:
    opcode: int
    sequence: int
    status: int
    associd: int
    leap: int
    data: bytes


@dataclass
class Collector:
    """Reassembles the response to one request from the datagrams that arrive."""

    opcode: int
    sequence: int
    max_fragments: int = MAX_FRAGMENTS
    pieces: dict[int, bytes] = field(default_factory=dict)
    end: int | None = None  # length of the whole response, once its last fragment came
    first: ControlHeader | None = None
    ignored: dict[str, int] = field(default_factory=dict)

    def add(self, datagram: bytes) -> Response | None:
        """The complete response once it is; None while fragments are missing. Raises
        ControlResponseError for an error answer, ControlProtocolError for a runaway one."""
        try:
            header = ControlHeader.unpack(datagram)
        except ControlError:
            return self._ignore("malformed")
        if not header.response:
            return self._ignore("not a response")
        if header.opcode != self.opcode or header.sequence != self.sequence:
            return self._ignore("another request's answer")
        if header.error:
            raise ControlResponseError(header.status >> 8, header.associd)
        if header.count > len(datagram) - HEADER_LEN:
            return self._ignore("count beyond the datagram")
        start, stop = header.offset, header.offset + header.count
        if stop > MAX_RESPONSE or (header.more and header.count == 0):
            return self._ignore("absurd offset or count")
        if self.end is not None and stop > self.end:
            return self._ignore("beyond the last fragment")
        data = datagram[HEADER_LEN:HEADER_LEN + header.count]
        if start in self.pieces:
            return self._ignore("duplicate")
        if any(start < o + len(d) and o < stop for o, d in self.pieces.items()):
            return self._ignore("overlapping")
        if not header.more:
            if self.end is not None or any(o + len(d) > stop for o, d in self.pieces.items()):
                return self._ignore("second last fragment")
            self.end = stop
        if len(self.pieces) >= self.max_fragments:
            raise ControlProtocolError(f"response in more than {self.max_fragments} fragments")
        self.pieces[start] = data
        if self.first is None or start == 0:
            self.first = header
        return self._complete()

    def _complete(self) -> Response | None:
        if self.end is None or self.first is None:
            return None
        if sum(len(d) for d in self.pieces.values()) != self.end:
            return None  # no overlaps, so a full count means no gaps
        data = b"".join(self.pieces[o] for o in sorted(self.pieces))
        h = self.first
        return Response(h.opcode, h.sequence, h.status, h.associd, h.leap, data)

    def _ignore(self, reason: str) -> None:
        self.ignored[reason] = self.ignored.get(reason, 0) + 1
        return None


# --- payloads ----------------------------------------------------------------------------


def parse_vars(data: bytes) -> dict[str, str]:
    """Variables in the order sent, values as sent (strings keep their quotes)."""
    return {name: value or "" for name, value in parse_text(data, keep_quotes=True)}


def unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


@dataclass(frozen=True, slots=True)
class Association:
    associd: int
    status: int

    @property
    def select(self) -> int:
        return (self.status >> 8) & 7

    @property
    def flags(self) -> int:
        return self.status >> 11

    @property
    def tally(self) -> str:
        return TALLY.get(self.select, " ")

    @property
    def condition(self) -> str:
        return CONDITIONS[self.select]

    @property
    def shown(self) -> bool:
        """ntpq's `peers`/`as` list only configured or reachable associations."""
        return bool(self.flags & (PST_CONFIG | PST_REACH))

    @property
    def broadcast(self) -> bool:
        return bool(self.flags & PST_BCAST)


def parse_assocs(data: bytes) -> list[Association]:
    """READSTAT's payload: (associd, status) pairs, sorted by association id as ntpq does."""
    if len(data) % 4:
        raise ControlProtocolError(f"association list of {len(data)} bytes, not a multiple of 4")
    pairs = [struct.unpack_from("!HH", data, i) for i in range(0, len(data), 4)]
    return sorted((Association(a, s) for a, s in pairs), key=lambda a: a.associd)


_TS = re.compile(r"0x([0-9a-fA-F]{1,8})\.([0-9a-fA-F]{1,8})$")
_INT = re.compile(r"[-+]?\d+$")
_HEX = re.compile(r"0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def parse_timestamp(value: str) -> int | None:
    """`0xe5a1b2c3.1a2b3c4d` -> the 64-bit NTP timestamp; None if it is not one."""
    match = _TS.match(value.strip())
    if match is None:
        return None
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def parse_number(value: str) -> int | float | None:
    text = value.strip()
    if _INT.match(text):
        return int(text)
    if _HEX.match(text):
        return int(text, 16)
    if _FLOAT.match(text):
        return float(text)
    return None


def typed(name: str, value: str, pivot_unix: float) -> object:
    """A value as JSON wants it: numbers as numbers, NTP timestamps as Unix seconds,
    the `filt*` lists as lists of numbers, anything else as a string."""
    if value.startswith('"'):
        text = unquote(value)
        if name.startswith("filt"):
            numbers = [parse_number(x) for x in text.split()]
            if all(n is not None for n in numbers):
                return numbers
        return text
    stamp = parse_timestamp(value)
    if stamp is not None:
        return ntp_to_unix(stamp, pivot_unix) if stamp else 0
    number = parse_number(value)
    return value if number is None else number


# --- peers billboard ---------------------------------------------------------------------

MODE_ACTIVE, MODE_CLIENT, MODE_BROADCAST, MODE_BCLIENT = 1, 3, 5, 6
NTP_MINPOLL = 3


@dataclass(frozen=True, slots=True)
class PeerRow:
    """One line of `ntpq -p`, decoded from an association's variables."""

    associd: int
    tally: str
    srcadr: str
    srcport: int
    srchost: str | None
    refid: str  # as sent: a code (LOCL, INIT) or an address
    stratum: int
    type: str
    when: int | None  # s since the last packet (or reference time); None: never
    poll: int  # s
    reach: int
    delay: float  # ms
    offset: float  # ms
    jitter: float  # ms (the dispersion when the server sent no jitter)
    condition: str


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = value.strip()
    if text.startswith("["):
        text = text[1:text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:
        text = text.split(":")[0]
    try:
        return ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return None


def is_refclock(value: str) -> bool:
    addr = _address(value)
    return isinstance(addr, ipaddress.IPv4Address) and addr.packed[:2] == b"\x7f\x7f"


def _peer_type(hmode: int | None, srcadr: str, dstadr: str | None) -> str:
    addr = _address(srcadr)
    if hmode == MODE_BCLIENT:
        return "b"
    if hmode == MODE_BROADCAST:
        return "M" if addr is not None and addr.is_multicast else "B"
    if hmode == MODE_CLIENT:
        if is_refclock(srcadr):
            return "l"
        if addr is None or addr.is_unspecified:
            return "p"
        return "a" if addr.is_multicast else "u"
    if hmode == MODE_ACTIVE:
        return "s"
    local = _address(dstadr) if dstadr is not None else None
    if local is None:
        return "?"
    if local.is_multicast:
        return "m"
    if isinstance(local, ipaddress.IPv4Address):
        packed = int(local)
        if packed & 0xFF == 0xFF:
            return "b"
        if packed == 0x7F000001:
            return "l"
        if packed & 0xFFFFFFE0 == 0:
            return "-"
    return "u"


def _int_var(variables: dict[str, str], name: str, default: int = 0) -> int:
    number = parse_number(variables.get(name, ""))
    return int(number) if number is not None else default


def _float_var(variables: dict[str, str], name: str) -> float | None:
    number = parse_number(variables.get(name, ""))
    return float(number) if number is not None else None


def peer_row(assoc: Association, variables: dict[str, str], now_ntp: int) -> PeerRow:
    """Decode what `ntpq -p` shows, the way ntpq 4.2.8's doprintpeers does."""
    srcadr = variables.get("srcadr", "0.0.0.0")
    srchost = variables.get("srchost")
    hpoll = _int_var(variables, "hpoll")
    ppoll = _int_var(variables, "ppoll")
    hpoll, ppoll = (NTP_MINPOLL if p < 0 else p for p in (hpoll, ppoll))
    hmode_number = parse_number(variables.get("hmode", ""))
    last = parse_timestamp(variables.get("rec", "")) or parse_timestamp(
        variables.get("reftime", "")) or 0
    when = ((now_ntp >> 32) - (last >> 32)) if last >> 32 else None
    jitter = _float_var(variables, "jitter")
    if jitter is None:
        jitter = _float_var(variables, "dispersion") or 0.0
    return PeerRow(
        associd=assoc.associd,
        tally=assoc.tally,
        srcadr=unquote(srcadr),
        srcport=_int_var(variables, "srcport", 123),
        srchost=unquote(srchost) if srchost and len(srchost) > 2 else None,
        refid=unquote(variables.get("refid", "0.0.0.0")),
        stratum=_int_var(variables, "stratum"),
        type=_peer_type(int(hmode_number) if hmode_number is not None else None, srcadr,
                        variables.get("dstadr")),
        when=when,
        poll=1 << min(min(ppoll, hpoll), 17),
        reach=_int_var(variables, "reach") & 0xFF,
        delay=_float_var(variables, "delay") or 0.0,
        offset=_float_var(variables, "offset") or 0.0,
        jitter=jitter,
        condition=assoc.condition,
    )


# --- mrulist -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MruEntry:
    addr: str  # address without port, IPv6 without brackets
    port: int
    first: int  # NTP timestamps
    last: int
    count: int
    mode: int
    version: int
    rs: int  # restrict flags, ntpd's RES_* bits

    @property
    def key(self) -> str:
        return f"[{self.addr}]:{self.port}" if ":" in self.addr else f"{self.addr}:{self.port}"


def split_address(text: str) -> tuple[str, int] | None:
    """`192.0.2.1:123` / `[2001:db8::1]:123` -> (address, port); None if neither, or if it
    could not be named back to the server in a continuation request (not ASCII, too long)."""
    text = text.strip()
    if len(text) > MAX_ADDRESS_TEXT or not text.isascii() or any(c in text for c in ' ,="'):
        return None
    if text.startswith("["):
        close = text.find("]")
        host, _, port = text[1:close], text[close + 1:close + 2], text[close + 2:]
    else:
        host, _, port = text.rpartition(":")
    try:
        ipaddress.ip_address(host)
        return host, int(port)
    except ValueError:
        return None


def mru_entries(variables: dict[str, str]) -> list[MruEntry]:
    """The `addr.N, last.N, ...` rows of one READ_MRU answer, in the order sent."""
    out = []
    index = 0
    while f"addr.{index}" in variables:
        where = split_address(unquote(variables[f"addr.{index}"]))
        last = parse_timestamp(variables.get(f"last.{index}", ""))
        first = parse_timestamp(variables.get(f"first.{index}", ""))
        if where is not None and last is not None:
            mv = _int_var(variables, f"mv.{index}")
            out.append(MruEntry(addr=where[0], port=where[1], first=first or last, last=last,
                                count=_int_var(variables, f"ct.{index}"), mode=mv & 7,
                                version=(mv >> 3) & 7, rs=_int_var(variables, f"rs.{index}")))
        index += 1
    return out


@dataclass
class MruSession:
    """ntpd's mrulist exchange: ask for a nonce, then READ_MRU rounds that each name the
    newest entries already received, until an answer carries `now=` (the list is complete).
    `params` are ntpq's filters (mincount=, laddr=, resall=, ...), sent as given."""

    params: dict[str, str] = field(default_factory=dict)
    frags: int = MRU_FRAGS
    max_rounds: int = MRU_MAX_ROUNDS
    nonce: str | None = None
    entries: dict[str, MruEntry] = field(default_factory=dict)
    newest: list[MruEntry] = field(default_factory=list)  # received, newest last
    now: int | None = None
    rounds: int = 0

    def take_nonce(self, data: bytes) -> None:
        nonce = parse_vars(data).get("nonce")
        if not nonce:
            raise ControlProtocolError("the server sent no mrulist nonce")
        self._set_nonce(nonce)

    def _set_nonce(self, value: str) -> None:
        """The nonce goes back in the next request: it must be one that can."""
        nonce = unquote(value)
        if not _NONCE.fullmatch(nonce):
            raise ControlProtocolError("the server sent a malformed mrulist nonce")
        self.nonce = nonce

    def next_request(self) -> bytes:
        """The next READ_MRU request; it names as many of the newest entries as fit in one
        datagram (at least one, once there are entries)."""
        if self.nonce is None:
            raise ControlProtocolError("no nonce to ask for the MRU list with")
        self.rounds += 1
        if self.rounds > self.max_rounds:
            raise ControlProtocolError(f"mrulist not complete after {self.max_rounds} requests")
        items = [f"nonce={self.nonce}", f"frags={self.frags}"]
        items += [f"{k}={v}" for k, v in self.params.items()]
        priors = list(reversed(self.newest[-MRU_PRIORS:]))
        while True:
            named = list(items)
            for index, entry in enumerate(priors):
                named += [f"addr.{index}={entry.key}", f"last.{index}=0x{entry.last >> 32:08x}."
                          f"{entry.last & 0xFFFFFFFF:08x}"]
            data = ", ".join(named).encode("ascii")
            if len(data) <= MAX_DATA_LEN:
                return data
            if len(priors) <= 1:
                raise ControlProtocolError("the mrulist request does not fit in one datagram")
            priors.pop()

    def restart(self) -> None:
        """The server no longer has the entries we named: start over from the oldest."""
        self.newest = []

    def feed(self, data: bytes) -> bool:
        """Take one READ_MRU answer; True once the list is complete."""
        variables = parse_vars(data)
        nonce = variables.get("nonce")
        if nonce:
            self._set_nonce(nonce)
        rows = mru_entries(variables)
        for entry in rows:
            self.entries.pop(entry.key, None)
            self.entries[entry.key] = entry
            if len(self.entries) > MRU_MAX_ENTRIES:
                raise ControlProtocolError(f"more than {MRU_MAX_ENTRIES} MRU entries")
        self.newest = (self.newest + rows)[-MRU_PRIORS:]
        now = parse_timestamp(variables.get("now", ""))
        if now is not None:
            self.now = now
            return True
        if not rows:
            raise ControlProtocolError("an incomplete MRU answer with no entries")
        return False
