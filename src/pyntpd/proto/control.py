"""NTP mode 6 control messages (RFC 9327): the codec and a read-only responder for ntpq.

Pure: no sockets, no clock reads. The daemon hands `ControlResponder.respond` a datagram,
the source's restrict flags, `now` and a `ControlSnapshot` of what it knows; it gets back the
response fragments to send (possibly none). Writes and configuration are always refused.

Wire format (RFC 9327 §2): a 12-byte header

    LI|VN|mode=6, R|E|M|opcode, sequence, status, association id, offset, count

then `count` bytes of data padded to a 4-byte boundary, then an optional MAC trailer
(ntpq signs the request padded to 8 bytes, then key id and digest). A signed request must
verify under `controlkey` (a trusted key) or it gets no answer at all; a verified one is
answered like any other: authentication unlocks nothing here, since every write is refused.

`mrulist` follows ntpd's nonce handshake: REQ_NONCE returns a nonce bound by HMAC to the
client's address and a time bucket; READ_MRU is only answered with a fresh nonce for the
same address, so a spoofed source never receives the (large) list.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
import ipaddress
import re
import struct
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pyntpd.proto.access import NOMRULIST, NOQUERY, Access, MonEntry, address_key
from pyntpd.proto.access_types import RestrictFlag
from pyntpd.proto.auth import AuthResult, KeyRing, SymmetricKey, mac_trailer
from pyntpd.proto.packet import MAX_PACKET_LEN, Mac
from pyntpd.proto.source import REGISTER_SIZE
from pyntpd.proto.timestamp import ntp_add, unix_to_ntp
from pyntpd.types import PHI, Sample, Tally

MODE_CONTROL = 6
HEADER_LEN = 12
MAX_DATA_LEN = 468  # ntpd's CTL_MAX_DATA_LEN: data bytes per fragment
MAX_TRAILER = 4 + 4 + 64  # padding to 8 bytes, key id, the longest digest
MAX_REQUEST_LEN = MAX_PACKET_LEN  # the longest datagram the daemon reads at all
MAX_LINE = 72  # ntpd's MAXDATALINELEN: text lines are broken before this
NONCE_LIFETIME = 16  # s a REQ_NONCE answer stays valid (ntpd's)
MAXDISPERSE = 16.0  # s, ntpd's value for a register slot never filled
MRU_FRAGS_LIMIT = 128
MRU_ROW_LIMIT = 256  # entries in one READ_MRU reply
# Entries one READ_MRU reply may read, those its filters leave out included: what bounds a
# reply's cost whatever the list's length (ntpd's walk skips filtered entries unbounded).
MRU_SCAN_LIMIT = 1024
MRU_PRIORS_LIMIT = 16  # addr.N/last.N pairs looked up to resume from (ntpd reads 16)

_HEADER = struct.Struct("!BBHHHHH")
_NONCE = re.compile(r"[0-9A-Fa-f]{24}")  # what make_nonce returns

# Flags in the second header byte.
RESPONSE = 0x80
ERROR = 0x40
MORE = 0x20
OPCODE_MASK = 0x1F


class Opcode(enum.IntEnum):
    UNSPEC = 0
    READSTAT = 1
    READVAR = 2
    WRITEVAR = 3
    READCLOCK = 4
    WRITECLOCK = 5
    SETTRAP = 6
    ASYNCMSG = 7
    CONFIGURE = 8
    SAVECONFIG = 9
    READ_MRU = 10
    READ_ORDLIST_A = 11
    REQ_NONCE = 12
    UNSETTRAP = 31


# ntpq's `readlist` sends READVAR with a variable list; there is no opcode of its own.
READLIST = Opcode.READVAR

WRITE_OPCODES = frozenset(
    {
        Opcode.WRITEVAR,
        Opcode.WRITECLOCK,
        Opcode.SETTRAP,
        Opcode.ASYNCMSG,
        Opcode.CONFIGURE,
        Opcode.SAVECONFIG,
        Opcode.UNSETTRAP,
    }
)

# Error codes, in the high byte of the status word of an error response.
CERR_UNSPEC = 0
CERR_PERMISSION = 1
CERR_BADFMT = 2
CERR_BADOP = 3
CERR_UNKNOWN = CERR_BADOP  # unknown opcode
CERR_BADASSOC = 4
CERR_UNKNOWNVAR = 5
CERR_BADVALUE = 6
CERR_RESTRICT = 7

# System status word: clock source (ntpd's CTL_SST_TS_*).
SST_UNSPEC = 0
SST_UHF = 4  # ntpd's sync_uhf_radio: a satellite (GPS) reference clock
SST_LOCAL = 5
SST_NTP = 6

# Peer status word, high 5 bits (ntpd's CTL_PST_*).
PST_CONFIG = 0x10
PST_AUTHENABLE = 0x08
PST_AUTHENTIC = 0x04
PST_REACH = 0x02
PST_BCAST = 0x01

# Restrict flags as mode 6 shows them (ntpd's RES_* bits, `rs.N` and resall/resany).
RES_WIRE: dict[RestrictFlag, int] = {
    RestrictFlag.IGNORE: 0x0001,
    RestrictFlag.NOSERVE: 0x0002,
    RestrictFlag.NOTRUST: 0x0004,
    RestrictFlag.VERSION: 0x0008,
    RestrictFlag.NOPEER: 0x0010,
    RestrictFlag.LIMITED: 0x0020,
    RestrictFlag.NOQUERY: 0x0040,
    RestrictFlag.NOMODIFY: 0x0080,
    RestrictFlag.NOTRAP: 0x0100,
    RestrictFlag.LOWPRIOTRAP: 0x0200,
    RestrictFlag.KOD: 0x0400,
    RestrictFlag.MSSNTP: 0x0800,
    RestrictFlag.NOMRULIST: 0x2000,
}


_RES_BITS = tuple((flag.value, bit) for flag, bit in RES_WIRE.items())


@functools.lru_cache(maxsize=1024)  # a handful of distinct values: the restrict rules'
def restrict_wire(flags: int) -> int:
    """Our restrict flag int -> ntpd's RES_* bits."""
    return sum(bit for value, bit in _RES_BITS if flags & value)


SELECT_CODES: dict[str, int] = {
    " ": 0,  # reject
    "x": 1,  # falseticker
    ".": 2,  # excess
    "-": 3,  # outlier
    "+": 4,  # candidate
    "#": 5,  # backup
    "*": 6,  # system peer
    "o": 7,  # system peer, PPS
}


class ControlDrop(enum.StrEnum):
    """Why a mode 6 datagram got no answer; each value names a counter."""

    TOO_SHORT = "control_too_short"
    NOT_CONTROL = "control_not_mode6"
    BAD_VERSION = "control_bad_version"
    RESPONSE_BIT = "control_response_bit"
    FRAGMENTED = "control_fragmented_request"
    NONZERO_OFFSET = "control_nonzero_offset"
    BAD_COUNT = "control_bad_count"
    TOO_LONG = "control_too_long"
    BAD_TRAILER = "control_bad_trailer"
    NOQUERY = "control_noquery"
    BAD_NONCE = "control_bad_nonce"
    BAD_AUTH = "control_bad_auth"  # a MAC that does not verify under controlkey


class ControlError(ValueError):
    """A mode 6 datagram that the codec refuses; `reason` names the drop counter."""

    def __init__(self, reason: ControlDrop, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ControlHeader:
    version: int
    opcode: int
    sequence: int
    status: int = 0
    associd: int = 0
    offset: int = 0
    count: int = 0
    leap: int = 0
    response: bool = False
    error: bool = False
    more: bool = False

    def pack(self) -> bytes:
        first = ((self.leap & 3) << 6) | ((self.version & 7) << 3) | MODE_CONTROL
        second = (
            (RESPONSE if self.response else 0)
            | (ERROR if self.error else 0)
            | (MORE if self.more else 0)
            | (self.opcode & OPCODE_MASK)
        )
        return _HEADER.pack(
            first, second, self.sequence, self.status, self.associd, self.offset, self.count
        )

    @classmethod
    def unpack(cls, data: bytes) -> ControlHeader:
        if len(data) < HEADER_LEN:
            raise ControlError(ControlDrop.TOO_SHORT, f"{len(data)} bytes")
        first, second, seq, status, associd, offset, count = _HEADER.unpack_from(data)
        if first & 7 != MODE_CONTROL:
            raise ControlError(ControlDrop.NOT_CONTROL, f"mode {first & 7}")
        return cls(
            version=(first >> 3) & 7,
            opcode=second & OPCODE_MASK,
            sequence=seq,
            status=status,
            associd=associd,
            offset=offset,
            count=count,
            leap=first >> 6,
            response=bool(second & RESPONSE),
            error=bool(second & ERROR),
            more=bool(second & MORE),
        )


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def encode(header: ControlHeader, data: bytes = b"") -> bytes:
    """One datagram: the header (its count set to len(data)) and the padded data."""
    if len(data) > 0xFFFF:
        raise ValueError("mode 6 data too long")
    fixed = ControlHeader(**{**_fields(header), "count": len(data)})
    return fixed.pack() + _pad4(data)


def _fields(header: ControlHeader) -> dict[str, object]:
    return {name: getattr(header, name) for name in ControlHeader.__slots__}


def decode(datagram: bytes) -> tuple[ControlHeader, bytes]:
    """Any mode 6 datagram (request or response): header and its `count` data bytes."""
    header = ControlHeader.unpack(datagram)
    available = len(datagram) - HEADER_LEN
    if header.count > available:
        raise ControlError(ControlDrop.BAD_COUNT, f"count {header.count} > {available}")
    if header.count > MAX_DATA_LEN:
        raise ControlError(ControlDrop.TOO_LONG, f"count {header.count} > {MAX_DATA_LEN}")
    return header, datagram[HEADER_LEN : HEADER_LEN + header.count]


def parse_request(datagram: bytes) -> tuple[ControlHeader, bytes]:
    """A mode 6 request, strictly: raises ControlError (never anything else) on any flaw.

    Like ntpd, zeros after the declared data are padding, however many: ntpstat sends a
    576-byte READVAR with count 0. Anything else after the data must be MAC-sized."""
    if len(datagram) < HEADER_LEN:
        raise ControlError(ControlDrop.TOO_SHORT, f"{len(datagram)} bytes")
    if len(datagram) > MAX_REQUEST_LEN:
        raise ControlError(ControlDrop.TOO_LONG, f"{len(datagram)} bytes")
    header, data = decode(datagram)
    if not 1 <= header.version <= 4:
        raise ControlError(ControlDrop.BAD_VERSION, f"version {header.version}")
    if header.response or header.error:
        raise ControlError(ControlDrop.RESPONSE_BIT, "response/error bit in a request")
    if header.more:
        raise ControlError(ControlDrop.FRAGMENTED, "multi-fragment requests are not accepted")
    if header.offset:
        raise ControlError(ControlDrop.NONZERO_OFFSET, f"offset {header.offset}")
    padded = HEADER_LEN + header.count + (-header.count % 4)
    trailer = datagram[padded:]
    if len(datagram) < padded and len(datagram) != HEADER_LEN + header.count:
        # Data present but its padding cut short: tolerated only if nothing follows at all.
        raise ControlError(ControlDrop.BAD_TRAILER, "truncated padding")
    if len(trailer) > MAX_TRAILER and any(trailer):
        raise ControlError(ControlDrop.BAD_TRAILER, f"{len(trailer)} bytes after the data")
    return header, data


def fragments(
    request: ControlHeader,
    data: bytes,
    status: int,
    associd: int,
    leap: int = 0,
) -> list[bytes]:
    """Response datagrams carrying `data`: M bit on all but the last, offsets as ntpd's."""
    chunks = [data[i : i + MAX_DATA_LEN] for i in range(0, len(data), MAX_DATA_LEN)] or [b""]
    out = []
    for index, chunk in enumerate(chunks):
        header = ControlHeader(
            version=request.version,
            opcode=request.opcode,
            sequence=request.sequence,
            status=status,
            associd=associd,
            offset=index * MAX_DATA_LEN,
            leap=leap,
            response=True,
            more=index < len(chunks) - 1,
        )
        out.append(encode(header, chunk))
    return out


def error_response(request: ControlHeader, code: int, leap: int = 0) -> bytes:
    header = ControlHeader(
        version=request.version,
        opcode=request.opcode,
        sequence=request.sequence,
        status=(code & 0xFF) << 8,
        associd=request.associd,
        leap=leap,
        response=True,
        error=True,
    )
    return encode(header)


def reassemble(datagrams: Iterable[bytes]) -> tuple[ControlHeader, bytes]:
    """Join response fragments by offset (what ntpq does); for tests and pyntpq."""
    pieces: dict[int, bytes] = {}
    last: ControlHeader | None = None
    first: ControlHeader | None = None
    for datagram in datagrams:
        header, data = decode(datagram)
        first = first or header
        pieces[header.offset] = data
        if not header.more:
            last = header
    if first is None or last is None:
        raise ControlError(ControlDrop.FRAGMENTED, "no last fragment")
    out = b""
    for offset in sorted(pieces):
        if offset != len(out):
            raise ControlError(ControlDrop.FRAGMENTED, f"gap at {len(out)}")
        out += pieces[offset]
    return first, out


# --- text encoding -----------------------------------------------------------------------


def join_text(items: Sequence[str]) -> bytes:
    """ntpd's ctl_putdata layout: `a=1, b=2,\r\nc=3\r\n` (lines kept under 72)."""
    if not items:
        return b""
    out = [items[0]]
    line = len(items[0])  # characters on the current line
    for item in items[1:]:
        width = len(item)
        # The comma, the item and one more must fit, or the item starts a new line.
        if line + width + 2 >= MAX_LINE:
            out.append(",\r\n")
            line = width
        else:
            out.append(", ")
            line += width + 2
        out.append(item)
    out.append("\r\n")
    return "".join(out).encode("ascii", "replace")


def parse_text(data: bytes, keep_quotes: bool = False) -> list[tuple[str, str | None]]:
    """`name=value, name="v,x", name` -> [(name, value)]; quotes removed unless
    `keep_quotes` (a client shows strings as the server sent them). Never raises."""
    text = data.decode("ascii", "replace")
    items: list[tuple[str, str | None]] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t\r\n,\0":
            i += 1
        if i >= n:
            break
        start = i
        while i < n and text[i] not in "=,\r\n\0":
            i += 1
        name = text[start:i].strip()
        value: str | None = None
        if i < n and text[i] == "=":
            i += 1
            while i < n and text[i] in " \t":
                i += 1
            if i < n and text[i] == '"':
                end = text.find('"', i + 1)
                end = n if end < 0 else end
                value = text[i : end + 1] if keep_quotes else text[i + 1 : end]
                i = end + 1
                while i < n and text[i] not in ",\r\n":
                    i += 1
            else:
                start = i
                while i < n and text[i] not in ",\r\n\0":
                    i += 1
                value = text[start:i].strip()
        if name:
            items.append((name, value))
    return items


def _ts(timestamp: int) -> str:
    return f"0x{(timestamp >> 32) & 0xFFFFFFFF:08x}.{timestamp & 0xFFFFFFFF:08x}"


def _quote(text: str) -> str:
    return '"' + text.replace('"', "'").replace("\r", " ").replace("\n", " ") + '"'


def _refid_text(refid: bytes, stratum: int, refclock: bool = False) -> str:
    """An address for stratum 2..15 (IPv4 refid), else the ASCII code (ntpd's ctl_putrefid);
    a reference clock's refid (LOCL, GPS) is always its code."""
    if 1 < stratum < 16 and len(refid) == 4 and not refclock:
        return str(ipaddress.IPv4Address(refid))
    chars = "".join(chr(b) if 0x20 < b < 0x7F else "." for b in refid.rstrip(b"\0"))
    return chars


def _ms(seconds: float, digits: int = 3) -> str:
    return f"{seconds * 1e3:.{digits}f}"


# --- snapshot ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """One association as ntpq sees it. Times in seconds, as the proto layer keeps them."""

    associd: int
    srcadr: str
    srcport: int = 123
    dstadr: str = "0.0.0.0"
    dstport: int = 123
    leap: int = 3
    stratum: int = 16
    precision: int = -20
    rootdelay: float = 0.0  # s
    rootdisp: float = 0.0  # s
    refid: bytes = b"INIT"
    refclock: bool = False  # a reference clock (127.127.t.u): its refid is a code
    reftime: int = 0  # NTP timestamp
    rec: int = 0  # NTP timestamp of the last reply received
    reach: int = 0
    unreach: int = 0
    hmode: int = 3
    pmode: int = 4
    hpoll: int = 6
    ppoll: int = 6
    headway: int = 0
    flash: int = 0
    keyid: int = 0
    offset: float = 0.0  # s
    delay: float = 0.0  # s
    dispersion: float = 0.0  # s
    jitter: float = 0.0  # s
    filtdelay: tuple[float, ...] = ()  # s, newest first
    filtoffset: tuple[float, ...] = ()
    filtdisp: tuple[float, ...] = ()
    tally: str = Tally.REJECT  # a Tally, or '#'/'o'
    configured: bool = True
    authenable: bool = False
    authentic: bool = False
    srchost: str | None = None  # the configured name, if it was one
    # Datagrams the association received, and those that gave no sample by reason. Not
    # mode 6 variables (ntpq has no names for them): the metrics and JSON status show them.
    received: int = 0
    dropped: Mapping[str, int] = field(default_factory=dict)
    # Variables ntpd gives only when asked by name (ntpq's pstats), already formatted.
    named: Mapping[str, str] = field(default_factory=dict)
    interleaved: int = 0  # samples from interleaved-mode replies
    transmit_stamps: Mapping[str, int] = field(default_factory=dict)  # samples' T1, by source

    def status_word(self) -> int:
        flags = PST_CONFIG if self.configured else 0
        if self.authenable:
            flags |= PST_AUTHENABLE
        if self.authentic:
            flags |= PST_AUTHENTIC
        if self.reach:
            flags |= PST_REACH
        select = SELECT_CODES.get(str(self.tally), 0)
        return (flags << 11) | (select << 8)

    def variables(self) -> dict[str, str]:
        v: dict[str, str] = {
            "srcadr": self.srcadr,
            "srcport": str(self.srcport),
        }
        if self.srchost:
            v["srchost"] = _quote(self.srchost)
        v.update(
            {
                "dstadr": self.dstadr,
                "dstport": str(self.dstport),
                **_clock_vars(self),
                "rec": _ts(self.rec),
                "reach": f"0x{self.reach & 0xFF:x}",
                "unreach": str(self.unreach),
                "hmode": str(self.hmode),
                "pmode": str(self.pmode),
                "hpoll": str(self.hpoll),
                "ppoll": str(self.ppoll),
                "headway": str(self.headway),
                "flash": f"0x{self.flash:x}",
                "keyid": str(self.keyid),
                "offset": _ms(self.offset, 6),
                "delay": _ms(self.delay, 6),
                "dispersion": _ms(self.dispersion),
                "jitter": _ms(self.jitter, 6),
                "filtdelay": _filter_list(self.filtdelay, 0.0),
                "filtoffset": _filter_list(self.filtoffset, 0.0),
                "filtdisp": _filter_list(self.filtdisp, MAXDISPERSE),
            }
        )
        return v


def _clock_vars(obj: PeerInfo | ControlSnapshot) -> dict[str, str]:
    """The variables a peer and the system share, formatted alike."""
    return {
        "leap": str(obj.leap),
        "stratum": str(obj.stratum),
        "precision": str(obj.precision),
        "rootdelay": _ms(obj.rootdelay),
        "rootdisp": _ms(obj.rootdisp),
        "refid": _refid_text(obj.refid, obj.stratum, obj.refclock),
        "reftime": _ts(obj.reftime),
    }


def _filter_list(values: Sequence[float], empty: float) -> str:
    """ntpd's register as it prints it: REGISTER_SIZE values in ms, newest first, slots
    never filled shown as ntpd initialises them (delay and offset 0, dispersion 16 s)."""
    slots = [*values[:REGISTER_SIZE], *[empty] * (REGISTER_SIZE - len(values))]
    return '"' + " ".join(f"{x * 1e3:.2f}" for x in slots) + '"'


def filter_register(samples: Sequence[Sample]) -> tuple[tuple[float, ...], ...]:
    """(delays, offsets, dispersions) of the register, newest first. As in ntpd, which adds
    PHI * elapsed to every slot when a sample comes in, a dispersion includes its age at the
    newest sample."""
    if not samples:
        return (), (), ()
    newest = samples[0].local_time
    return (tuple(s.delay for s in samples), tuple(s.offset for s in samples),
            tuple(s.dispersion + PHI * max(newest - s.local_time, 0.0) for s in samples))


@dataclass(frozen=True, slots=True)
class MruItem:
    """One MRU source; `first`/`last` in the same time base as `now` passed to respond()."""

    addr: str  # "192.0.2.1" or "2001:db8::1"
    port: int
    first: float
    last: float
    count: int
    mode_version: int  # (version << 3) | mode, as ntpd's mv
    flags: int = 0  # restrict flags

    @property
    def address_text(self) -> str:
        return f"[{self.addr}]:{self.port}" if ":" in self.addr else f"{self.addr}:{self.port}"


class MruRecord(Protocol):
    """One MRU entry as the READ_MRU walk reads it: MonEntry (the daemon's list) and MruItem
    (a fixed list) both are one. Times in the time base of the view's `stamp`."""

    @property
    def first(self) -> float: ...
    @property
    def last(self) -> float: ...
    @property
    def count(self) -> int: ...
    @property
    def port(self) -> int: ...
    @property
    def mode_version(self) -> int: ...
    @property
    def flags(self) -> int: ...


class MruView(Protocol):
    """The MRU list, oldest to newest, read one entry at a time: a reply costs what it sends,
    never the whole list (ntpd walks its list the same way)."""

    def __len__(self) -> int: ...
    def oldest(self) -> MruRecord | None: ...
    def newest(self) -> MruRecord | None: ...
    def newer(self, record: MruRecord) -> MruRecord | None: ...
    def older(self, record: MruRecord) -> MruRecord | None: ...
    def find(self, address_text: str) -> MruRecord | None:
        """The entry `addr.N` names (`192.0.2.1:123`, `[2001:db8::1]:123`), if its port matches."""
        ...
    def address_text(self, record: MruRecord) -> str: ...
    def stamp(self, seconds: float) -> int:
        """An entry's time as an NTP timestamp: the same value every time it is asked, so a
        client's `last.N` matches the entry it names in a later request."""
        ...


def _split_address(text: str) -> tuple[int, bool, int] | None:
    """`192.0.2.1:123` / `[2001:db8::1]:123` -> (address int, is IPv6, port); None if neither."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not port_text.isdigit() or len(port_text) > 5:
        return None
    is_v6 = host.startswith("[") and host.endswith("]")
    if is_v6:
        host = host[1:-1]
    try:
        address = ipaddress.IPv6Address(host) if is_v6 else ipaddress.IPv4Address(host)
    except ValueError:
        return None
    return int(address), is_v6, int(port_text)


def _address_text(address: int, is_v6: bool, port: int) -> str:
    if is_v6:
        return f"[{ipaddress.IPv6Address(address)}]:{port}"
    # What str(IPv4Address) gives, in a fraction of its time (a page names up to 256).
    return f"{address >> 24}.{address >> 16 & 255}.{address >> 8 & 255}.{address & 255}:{port}"


class AccessMru:
    """The daemon's MRU list (proto.access.Access) as an MruView, read in place. Its times
    are the `now` the serving path passes to Access.check: Unix time."""

    def __init__(self, access: Access) -> None:
        self._access = access

    def __len__(self) -> int:
        return len(self._access.mru)

    def oldest(self) -> MonEntry | None:
        return self._access.oldest()

    def newest(self) -> MonEntry | None:
        return self._access.newest()

    def newer(self, record: MruRecord) -> MonEntry | None:
        return self._access.newer(record)  # type: ignore[arg-type]

    def older(self, record: MruRecord) -> MonEntry | None:
        return self._access.older(record)  # type: ignore[arg-type]

    def find(self, address_text: str) -> MonEntry | None:
        where = _split_address(address_text)
        if where is None:
            return None
        address, is_v6, port = where
        entry = self._access.mru.get(address_key(address, is_v6))
        return entry if entry is not None and entry.port == port else None

    def address_text(self, record: MruRecord) -> str:
        key: int = record.key  # type: ignore[attr-defined]
        return _address_text(key & _V6_MASK, bool(key >> 128), record.port)

    def stamp(self, seconds: float) -> int:
        return unix_to_ntp(seconds)


_V6_MASK = (1 << 128) - 1


class SequenceMru:
    """A fixed list of MruItems as an MruView (ControlSnapshot.mru: tests, tools). Times are
    stamped against the snapshot's clock: `clock` is the NTP timestamp of `now`."""

    def __init__(self, items: Iterable[MruItem], clock: int, now: float) -> None:
        self._items = sorted(items, key=lambda m: m.last)  # oldest first
        self._index = {id(item): i for i, item in enumerate(self._items)}
        self._by_address = {item.address_text: item for item in self._items}
        self._clock = clock
        self._now = now

    def __len__(self) -> int:
        return len(self._items)

    def _at(self, index: int) -> MruItem | None:
        return self._items[index] if 0 <= index < len(self._items) else None

    def oldest(self) -> MruItem | None:
        return self._at(0)

    def newest(self) -> MruItem | None:
        return self._at(len(self._items) - 1)

    def newer(self, record: MruRecord) -> MruItem | None:
        return self._at(self._index[id(record)] + 1)

    def older(self, record: MruRecord) -> MruItem | None:
        index = self._index[id(record)]
        return self._at(index - 1) if index else None

    def find(self, address_text: str) -> MruItem | None:
        return self._by_address.get(address_text.strip())

    def address_text(self, record: MruRecord) -> str:
        return record.address_text  # type: ignore[attr-defined, no-any-return]

    def stamp(self, seconds: float) -> int:
        return ntp_add(self._clock, seconds - self._now)


class ControlState(Protocol):
    """What the responder may ask about, each part built only when a request needs it: the
    daemon's is lazy (daemon/mode6.py), a ControlSnapshot holds everything already."""

    @property
    def leap(self) -> int: ...
    def system_snapshot(self) -> ControlSnapshot:
        """The system variables (its `peers` and `mru` may be left empty)."""
        ...
    def associations(self) -> Sequence[PeerInfo]: ...
    def association(self, associd: int) -> PeerInfo | None: ...
    def clock_variables(self, associd: int) -> tuple[int, dict[str, str]] | None:
        """A reference clock's READCLOCK answer: (status word, variables); None if
        `associd` is no reference clock."""
        ...
    def mru_view(self, now: float) -> MruView: ...
    def named_variables(self, names: Sequence[str]) -> Mapping[str, str]:
        """The system variables ntpd gives only when asked by name (ntpq's sysinfo,
        sysstats, monstats, authinfo, iostats), formatted: those of `names` it has, and
        perhaps others computed with them; a name it lacks is left out."""
        ...


@dataclass(frozen=True, slots=True)
class ControlSnapshot:
    """What the daemon knows, at the moment of the request. Offsets/delays in seconds."""

    version: str = "pyntpd"
    processor: str = ""
    system: str = ""
    leap: int = 3
    stratum: int = 16
    precision: int = -20
    rootdelay: float = 0.0  # s (sent in ms)
    rootdisp: float = 0.0  # s
    refid: bytes = b"INIT"
    refclock: bool = False  # synchronised to a reference clock: the refid is its code
    reftime: int = 0  # NTP timestamp
    clock: int = 0  # NTP timestamp of `now` (also the base for MRU times)
    peer: int = 0  # association id of the system peer, 0: none
    tc: int = 6
    mintc: int = 3
    offset: float = 0.0  # s
    frequency: float = 0.0  # ppm
    sys_jitter: float = 0.0  # s
    clk_jitter: float = 0.0  # s
    clk_wander: float = 0.0  # ppm
    clock_source: int | None = None  # SST_*; None: NTP when synchronised
    peers: tuple[PeerInfo, ...] = ()
    # Reference clocks' READCLOCK answers by association id: (status word, variables).
    clocks: Mapping[int, tuple[int, dict[str, str]]] = field(default_factory=dict)
    mru: tuple[MruItem, ...] = ()
    # Variables ntpd gives only when asked by name (sysinfo, sysstats, monstats, iostats,
    # authinfo, timerstats), already formatted; `rv` without names leaves them out.
    named: Mapping[str, str] = field(default_factory=dict)

    def status_word(self) -> int:
        source = self.clock_source
        if source is None:
            source = SST_NTP if self.peer and self.leap != 3 else SST_UNSPEC
        return ((self.leap & 3) << 14) | ((source & 0x3F) << 8)

    def variables(self) -> dict[str, str]:
        return {
            "version": _quote(self.version),
            "processor": _quote(self.processor),
            "system": _quote(self.system),
            **_clock_vars(self),
            "clock": _ts(self.clock),
            "peer": str(self.peer),
            "tc": str(self.tc),
            "mintc": str(self.mintc),
            "offset": _ms(self.offset, 6),
            "frequency": f"{self.frequency:.3f}",
            "sys_jitter": _ms(self.sys_jitter, 6),
            "clk_jitter": _ms(self.clk_jitter, 3),
            "clk_wander": f"{self.clk_wander:.3f}",
        }

    # --- ControlState: a snapshot already holds everything --------------------------------

    def system_snapshot(self) -> ControlSnapshot:
        return self

    def associations(self) -> Sequence[PeerInfo]:
        return self.peers

    def association(self, associd: int) -> PeerInfo | None:
        for peer in self.peers:
            if peer.associd == associd:
                return peer
        return None

    def clock_variables(self, associd: int) -> tuple[int, dict[str, str]] | None:
        return self.clocks.get(associd)

    def mru_view(self, now: float) -> SequenceMru:
        return SequenceMru(self.mru, self.clock, now)

    def named_variables(self, names: Sequence[str]) -> Mapping[str, str]:
        return self.named


# --- responder ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ControlReply:
    fragments: list[bytes]
    drop: ControlDrop | None = None


def _address_bytes(address_key: Hashable) -> bytes:
    if isinstance(address_key, bytes):
        return address_key
    if isinstance(address_key, str):
        return address_key.encode()
    return repr(address_key).encode()


@dataclass
class ControlResponder:
    """Answers ntpq. `secret` keys the mrulist nonces (random bytes from the daemon)."""

    secret: bytes
    drops: dict[ControlDrop, int] = field(default_factory=dict)
    answered: int = 0
    keys: KeyRing = field(default_factory=KeyRing)  # the daemon's trusted keys
    control_key: int | None = None  # `controlkey`: the one key mode 6 MACs may use

    # --- nonces ---------------------------------------------------------------------------

    def make_nonce(self, address_key: Hashable, now: float) -> str:
        stamp = int(now) & 0xFFFFFFFF
        return f"{stamp:08x}" + self._mac(address_key, stamp)

    def check_nonce(self, nonce: str, address_key: Hashable, now: float) -> bool:
        # Hex digits only: compare_digest raises on non-ASCII text (a U+FFFD from a byte
        # the request decoding replaced), and int() would take signs, blanks, underscores.
        if not _NONCE.fullmatch(nonce):
            return False
        stamp = int(nonce[:8], 16)
        if not hmac.compare_digest(nonce[8:].lower(), self._mac(address_key, stamp)):
            return False
        age = (int(now) - stamp) & 0xFFFFFFFF
        return age <= NONCE_LIFETIME

    def _mac(self, address_key: Hashable, stamp: int) -> str:
        message = stamp.to_bytes(4, "big") + _address_bytes(address_key)
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()[:16]

    # --- entry points ---------------------------------------------------------------------

    def respond(
        self,
        data: bytes,
        address_key: Hashable,
        flags: int,
        now: float,
        state: ControlState,
    ) -> list[bytes]:
        """Response fragments for one request (empty: dropped, see `drops`)."""
        return self.handle(data, address_key, flags, now, state).fragments

    def handle(
        self,
        data: bytes,
        address_key: Hashable,
        flags: int,
        now: float,
        state: ControlState,
    ) -> ControlReply:
        # Everything that can refuse a request comes before `state` is asked for anything:
        # a refused or malformed request costs its parsing, never the daemon's state.
        if flags & NOQUERY:
            return self._drop(ControlDrop.NOQUERY)
        try:
            header, body = parse_request(data)
        except ControlError as exc:
            return self._drop(exc.reason)
        signed, key = self._signer(data, header.count)
        if not signed:
            return self._drop(ControlDrop.BAD_AUTH)
        reply = self._dispatch(header, body, address_key, flags, now, state)
        if reply.fragments:
            self.answered += 1
        if key is not None:
            # As ntpd: the answer to a signed request is signed with the same key (ntpq
            # checks it and warns about an answer without a MAC).
            reply = ControlReply([_sign(fragment, key) for fragment in reply.fragments],
                                 reply.drop)
        return reply

    def _signer(self, data: bytes, count: int) -> tuple[bool, SymmetricKey | None]:
        """(False, None) for a request whose MAC trailer fails under `controlkey`;
        (True, the key) for one it verifies; (True, None) for an unsigned one."""
        signed_end = HEADER_LEN + count + (-(HEADER_LEN + count) % 8)
        trailer = data[signed_end:]
        if not any(trailer):
            return True, None  # no MAC: only zero padding (or nothing) after the data
        if len(trailer) < 4:
            return False, None
        mac = Mac(int.from_bytes(trailer[:4], "big"), bytes(trailer[4:]))
        if self.control_key is None or mac.key_id != self.control_key:
            return False, None
        if self.keys.check(mac, data[:signed_end]) is not AuthResult.OK:
            return False, None
        return True, self.keys.trusted_key(mac.key_id)

    def _drop(self, reason: ControlDrop) -> ControlReply:
        self.drops[reason] = self.drops.get(reason, 0) + 1
        return ControlReply([], reason)

    def _dispatch(
        self,
        header: ControlHeader,
        body: bytes,
        address_key: Hashable,
        flags: int,
        now: float,
        state: ControlState,
    ) -> ControlReply:
        op = header.opcode

        def error(code: int) -> ControlReply:
            return ControlReply([error_response(header, code, state.leap & 3)])

        if op == Opcode.READSTAT:
            return self._readstat(header, state)
        if op == Opcode.READVAR:
            return self._readvar(header, body, state)
        if op == Opcode.READCLOCK:
            return self._readclock(header, body, state)
        if op == Opcode.REQ_NONCE:
            if flags & NOMRULIST:
                return error(CERR_PERMISSION)
            text = join_text([f"nonce={self.make_nonce(address_key, now)}"])
            status = state.system_snapshot().status_word()
            return ControlReply(fragments(header, text, status, 0, state.leap & 3))
        if op == Opcode.READ_MRU:
            if flags & NOMRULIST:
                return error(CERR_PERMISSION)
            return self._read_mru(header, body, address_key, now, state)
        if op in WRITE_OPCODES or op == Opcode.READ_ORDLIST_A:
            return error(CERR_PERMISSION)
        return error(CERR_BADOP)

    def _readstat(self, header: ControlHeader, state: ControlState) -> ControlReply:
        leap = state.leap & 3
        if header.associd:
            peer = state.association(header.associd)
            if peer is None:
                return ControlReply([error_response(header, CERR_BADASSOC, leap)])
            return ControlReply(fragments(header, b"", peer.status_word(), peer.associd, leap))
        peers = state.associations()
        data = b"".join(struct.pack("!HH", p.associd, p.status_word()) for p in peers)
        return ControlReply(fragments(header, data, state.system_snapshot().status_word(), 0, leap))

    def _readvar(self, header: ControlHeader, body: bytes, state: ControlState) -> ControlReply:
        leap = state.leap & 3
        if header.associd:
            peer = state.association(header.associd)
            if peer is None:
                return ControlReply([error_response(header, CERR_BADASSOC, leap)])
            variables, status = peer.variables(), peer.status_word()
            peer_named: Mapping[str, str] | None = peer.named
        else:
            system = state.system_snapshot()
            variables, status = system.variables(), system.status_word()
            peer_named = None
        wanted = [name for name, _ in parse_text(body)]
        if wanted:
            # Variables given only by name are computed only when named, and only those.
            unlisted = [name for name in wanted if name not in variables]
            if unlisted:
                named = state.named_variables(unlisted) if peer_named is None else peer_named
                variables = {**variables, **named}
            if any(name not in variables for name in wanted):
                return ControlReply([error_response(header, CERR_UNKNOWNVAR, leap)])
            names = list(dict.fromkeys(wanted))
        else:
            names = list(variables)
        text = join_text([f"{name}={variables[name]}" for name in names])
        return ControlReply(fragments(header, text, status, header.associd, leap))

    def _readclock(self, header: ControlHeader, body: bytes,
                   state: ControlState) -> ControlReply:
        """ntpq's `cv`: a reference clock's variables. Association 0 is the system peer,
        as in ntpd, when that is a reference clock."""
        leap = state.leap & 3
        associd = header.associd or state.system_snapshot().peer
        clock = state.clock_variables(associd) if associd else None
        if clock is None:
            return ControlReply([error_response(header, CERR_BADASSOC, leap)])
        status, variables = clock
        wanted = [name for name, _ in parse_text(body)]
        if any(name not in variables for name in wanted):
            return ControlReply([error_response(header, CERR_UNKNOWNVAR, leap)])
        names = list(dict.fromkeys(wanted)) if wanted else list(variables)
        text = join_text([f"{name}={variables[name]}" for name in names])
        return ControlReply(fragments(header, text, status, associd, leap))

    def _read_mru(
        self,
        header: ControlHeader,
        body: bytes,
        address_key: Hashable,
        now: float,
        state: ControlState,
    ) -> ControlReply:
        """One page of the MRU list, oldest first, from the oldest entry or from the entry
        after the newest one the client names (ntpd's read_mru_list). The page reads at
        most MRU_SCAN_LIMIT entries, whatever the list's length and the filters."""
        leap = state.leap & 3
        params = dict(parse_text(body))
        nonce = params.get("nonce")
        if nonce is None:
            return ControlReply([error_response(header, CERR_BADVALUE, leap)])
        if not self.check_nonce(nonce, address_key, now):
            return self._drop(ControlDrop.BAD_NONCE)
        frags = _int(params.get("frags"), 0)
        limit = _int(params.get("limit"), 0)
        if frags <= 0 and limit <= 0:
            frags = 4
        frags = min(max(frags, 0), MRU_FRAGS_LIMIT)
        limit = min(max(limit, 0), MRU_ROW_LIMIT) if limit > 0 else MRU_ROW_LIMIT
        mincount = _int(params.get("mincount"), 0)
        resall = _int(params.get("resall"), 0, 16)
        resany = _int(params.get("resany"), 0, 16)
        maxlstint = _int(params.get("maxlstint"), 0)
        recent = _int(params.get("recent"), 0)

        view = state.mru_view(now)
        # Continuation: addr.N/last.N name entries the client already has, newest first;
        # the page starts after the first of them still where the client saw it.
        priors = sorted(
            (_int(key[5:], -1, 10), value)
            for key, value in params.items()
            if key.startswith("addr.") and value is not None
        )
        record: MruRecord | None
        if priors:
            start = None
            for index, addr in priors[:MRU_PRIORS_LIMIT]:
                named = view.find(addr)
                if named is not None and view.stamp(named.last) == _timestamp(
                        params.get(f"last.{index}")):
                    start = named
                    break
            if start is None:
                return ControlReply([error_response(header, CERR_UNKNOWNVAR, leap)])
            record = view.newer(start)
        elif 0 < recent < len(view):
            # The `recent` newest: counted back from the newest end, at most a page's reading.
            record = view.newest()
            for _ in range(min(recent, MRU_SCAN_LIMIT) - 1):
                record = view.older(record) if record is not None else None
        else:
            record = view.oldest()

        rows: list[str] = [f"nonce={self.make_nonce(address_key, now)}"]
        budget = (frags * MAX_DATA_LEN) if frags else 1 << 30
        size = len(join_text(rows))
        sent = 0
        read = 0
        last_sent: MruRecord | None = None
        while record is not None and sent < limit and read < MRU_SCAN_LIMIT:
            read += 1
            following = view.newer(record)
            wire = restrict_wire(record.flags)
            wanted = not (
                record.count < mincount
                or (resall and wire & resall != resall)
                or (resany and not wire & resany)
                or (maxlstint and now - record.last > maxlstint)
            )
            # A page that read its limit of filtered-out entries still ends with the last
            # one read, so the client's next request resumes after it (a page with no
            # entries and no `now=` would leave the client nowhere to resume from).
            if not wanted and (read < MRU_SCAN_LIMIT or following is None):
                record = following
                continue
            row = [
                f"addr.{sent}={view.address_text(record)}",
                f"last.{sent}={_ts(view.stamp(record.last))}",
                f"first.{sent}={_ts(view.stamp(record.first))}",
                f"ct.{sent}={record.count}",
                f"mv.{sent}={record.mode_version & 0xFF}",
                f"rs.{sent}=0x{wire:x}",
            ]
            extra = sum(map(len, row)) + 4 * len(row)
            if size + extra + 64 > budget:
                break
            rows.extend(row)
            size += extra
            sent += 1
            last_sent = record
            record = following
        if record is None:  # the page reached the newest entry: the list is complete
            rows.append(f"now={_ts(state.system_snapshot().clock)}")
            if last_sent is not None:
                rows.append(f"last.newest={_ts(view.stamp(last_sent.last))}")
        text = join_text(rows)
        return ControlReply(fragments(header, text, state.system_snapshot().status_word(), 0, leap))


def _sign(fragment: bytes, key: SymmetricKey) -> bytes:
    """ntpd's ctl_flushpkt: the fragment zero-padded to 8 bytes, then key id and digest."""
    padded = fragment + b"\0" * (-len(fragment) % 8)
    return padded + mac_trailer(key, padded)


def _timestamp(text: str | None) -> int | None:
    """`0x%08x.%08x` (ntpd's l_fp in text) -> the 64-bit NTP timestamp; None if not one."""
    if text is None:
        return None
    seconds, dot, fraction = text.strip().partition(".")
    if not dot or not seconds.lower().startswith("0x"):
        return None
    seconds = seconds[2:]
    if not (0 < len(seconds) <= 8 and 0 < len(fraction) <= 8):
        return None
    try:
        return (int(seconds, 16) << 32) | int(fraction, 16)
    except ValueError:
        return None


def _int(text: str | None, default: int, base: int = 0) -> int:
    if text is None:
        return default
    try:
        return int(text, base)
    except ValueError:
        return default
