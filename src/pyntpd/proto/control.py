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
import hashlib
import hmac
import ipaddress
import re
import struct
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pyntpd.proto.access import NOMRULIST, NOQUERY
from pyntpd.proto.access_types import RestrictFlag
from pyntpd.proto.auth import AuthResult, KeyRing
from pyntpd.proto.packet import Mac
from pyntpd.proto.timestamp import ntp_add
from pyntpd.types import Tally

MODE_CONTROL = 6
HEADER_LEN = 12
MAX_DATA_LEN = 468  # ntpd's CTL_MAX_DATA_LEN: data bytes per fragment
MAX_TRAILER = 4 + 4 + 64  # padding to 8 bytes, key id, the longest digest
MAX_LINE = 72  # ntpd's MAXDATALINELEN: text lines are broken before this
NONCE_LIFETIME = 16  # s a REQ_NONCE answer stays valid (ntpd's)
MRU_FRAGS_LIMIT = 128
MRU_ROW_LIMIT = 256

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


def restrict_wire(flags: int) -> int:
    """Our restrict flag int -> ntpd's RES_* bits."""
    return sum(bit for flag, bit in RES_WIRE.items() if flags & flag.value)


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
    """A mode 6 request, strictly: raises ControlError (never anything else) on any flaw."""
    if len(datagram) < HEADER_LEN:
        raise ControlError(ControlDrop.TOO_SHORT, f"{len(datagram)} bytes")
    if len(datagram) > HEADER_LEN + MAX_DATA_LEN + MAX_TRAILER:
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
    trailer = len(datagram) - padded
    if trailer < 0 and len(datagram) != HEADER_LEN + header.count:
        # Data present but its padding cut short: tolerated only if nothing follows at all.
        raise ControlError(ControlDrop.BAD_TRAILER, "truncated padding")
    if trailer > MAX_TRAILER:
        raise ControlError(ControlDrop.BAD_TRAILER, f"{trailer} bytes after the data")
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
    """ntpd's ctl_putdata layout: `a=1, b=2,\\r\\nc=3\\r\\n` (lines kept under 72)."""
    out: list[str] = []
    line = 0
    for index, item in enumerate(items):
        if index:
            out.append(",")
            line += 1
            if len(item) + line + 1 >= MAX_LINE:
                out.append("\r\n")
                line = 0
            else:
                out.append(" ")
                line += 1
        out.append(item)
        line += len(item)
    if items:
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
                "filtdelay": _filter_list(self.filtdelay),
                "filtoffset": _filter_list(self.filtoffset),
                "filtdisp": _filter_list(self.filtdisp),
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


def _filter_list(values: Sequence[float]) -> str:
    return '"' + " ".join(f"{x * 1e3:.2f}" for x in values) + '"'


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


def mru_items(entries: Iterable[tuple[int, object]]) -> list[MruItem]:
    """Access.entries() -> MruItems (keys: IPv4 int, or IPv6 int tagged with 1 << 128)."""
    items = []
    for key, entry in entries:
        if key >> 128:
            addr = str(ipaddress.IPv6Address(key & ((1 << 128) - 1)))
        else:
            addr = str(ipaddress.IPv4Address(key & 0xFFFFFFFF))
        items.append(
            MruItem(
                addr=addr,
                port=getattr(entry, "port", 0),
                first=getattr(entry, "first", 0.0),
                last=getattr(entry, "last", 0.0),
                count=getattr(entry, "count", 0),
                mode_version=getattr(entry, "mode_version", 0),
                flags=getattr(entry, "flags", 0),
            )
        )
    return items


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
        snapshot: ControlSnapshot,
    ) -> list[bytes]:
        """Response fragments for one request (empty: dropped, see `drops`)."""
        return self.handle(data, address_key, flags, now, snapshot).fragments

    def handle(
        self,
        data: bytes,
        address_key: Hashable,
        flags: int,
        now: float,
        snapshot: ControlSnapshot,
    ) -> ControlReply:
        if flags & NOQUERY:
            return self._drop(ControlDrop.NOQUERY)
        try:
            header, body = parse_request(data)
        except ControlError as exc:
            return self._drop(exc.reason)
        if not self._authentic_or_unsigned(data, header.count):
            return self._drop(ControlDrop.BAD_AUTH)
        reply = self._dispatch(header, body, address_key, flags, now, snapshot)
        if reply.fragments:
            self.answered += 1
        return reply

    def _authentic_or_unsigned(self, data: bytes, count: int) -> bool:
        """False for a request whose MAC trailer fails under `controlkey`."""
        signed_end = HEADER_LEN + count + (-(HEADER_LEN + count) % 8)
        trailer = data[signed_end:]
        if len(trailer) <= 4 and not any(trailer):
            return True  # no MAC: only padding (or nothing) after the data
        if len(trailer) < 4:
            return False
        mac = Mac(int.from_bytes(trailer[:4], "big"), bytes(trailer[4:]))
        if self.control_key is None or mac.key_id != self.control_key:
            return False
        return self.keys.check(mac, data[:signed_end]) is AuthResult.OK

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
        snap: ControlSnapshot,
    ) -> ControlReply:
        leap = snap.leap & 3
        op = header.opcode

        def error(code: int) -> ControlReply:
            return ControlReply([error_response(header, code, leap)])

        if op == Opcode.READSTAT:
            return self._readstat(header, snap)
        if op == Opcode.READVAR:
            return self._readvar(header, body, snap)
        if op == Opcode.READCLOCK:
            return self._readclock(header, body, snap)
        if op == Opcode.REQ_NONCE:
            if flags & NOMRULIST:
                return error(CERR_PERMISSION)
            text = join_text([f"nonce={self.make_nonce(address_key, now)}"])
            return ControlReply(fragments(header, text, snap.status_word(), 0, leap))
        if op == Opcode.READ_MRU:
            if flags & NOMRULIST:
                return error(CERR_PERMISSION)
            return self._read_mru(header, body, address_key, now, snap)
        if op in WRITE_OPCODES or op == Opcode.READ_ORDLIST_A:
            return error(CERR_PERMISSION)
        return error(CERR_BADOP)

    def _readstat(self, header: ControlHeader, snap: ControlSnapshot) -> ControlReply:
        leap = snap.leap & 3
        if header.associd:
            peer = _find(snap, header.associd)
            if peer is None:
                return ControlReply([error_response(header, CERR_BADASSOC, leap)])
            return ControlReply(fragments(header, b"", peer.status_word(), peer.associd, leap))
        data = b"".join(struct.pack("!HH", p.associd, p.status_word()) for p in snap.peers)
        return ControlReply(fragments(header, data, snap.status_word(), 0, leap))

    def _readvar(self, header: ControlHeader, body: bytes, snap: ControlSnapshot) -> ControlReply:
        leap = snap.leap & 3
        if header.associd:
            peer = _find(snap, header.associd)
            if peer is None:
                return ControlReply([error_response(header, CERR_BADASSOC, leap)])
            variables, status = peer.variables(), peer.status_word()
        else:
            variables, status = snap.variables(), snap.status_word()
        wanted = [name for name, _ in parse_text(body)]
        if wanted:
            if any(name not in variables for name in wanted):
                return ControlReply([error_response(header, CERR_UNKNOWNVAR, leap)])
            names = list(dict.fromkeys(wanted))
        else:
            names = list(variables)
        text = join_text([f"{name}={variables[name]}" for name in names])
        return ControlReply(fragments(header, text, status, header.associd, leap))

    def _readclock(self, header: ControlHeader, body: bytes,
                   snap: ControlSnapshot) -> ControlReply:
        """ntpq's `cv`: a reference clock's variables. Association 0 is the system peer,
        as in ntpd, when that is a reference clock."""
        leap = snap.leap & 3
        associd = header.associd or (snap.peer if snap.peer in snap.clocks else 0)
        clock = snap.clocks.get(associd)
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
        snap: ControlSnapshot,
    ) -> ControlReply:
        leap = snap.leap & 3
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

        def stamp(t: float) -> int:
            return ntp_add(snap.clock, t - now)

        items = sorted(snap.mru, key=lambda m: m.last)  # oldest first, as ntpd sends them
        if recent > 0:
            items = items[-recent:]
        # Continuation: addr.N/last.N name entries the client already has, newest first.
        priors = sorted(
            (_int(key[5:], -1, 10), value)
            for key, value in params.items()
            if key.startswith("addr.") and value is not None
        )
        if priors:
            position = {item.address_text: index for index, item in enumerate(items)}
            start = None
            for index, addr in priors:
                at = position.get(addr)
                last = params.get(f"last.{index}")
                if at is not None and _ts(stamp(items[at].last)) == last:
                    start = at + 1
                    break
            if start is None:
                return ControlReply([error_response(header, CERR_UNKNOWNVAR, leap)])
            items = items[start:]
        rows: list[str] = [f"nonce={self.make_nonce(address_key, now)}"]
        budget = (frags * MAX_DATA_LEN) if frags else 1 << 30
        size = len(join_text(rows))
        sent = 0
        complete = True
        for item in items:
            if item.count < mincount:
                continue
            wire = restrict_wire(item.flags)
            if resall and wire & resall != resall:
                continue
            if resany and not wire & resany:
                continue
            if maxlstint and now - item.last > maxlstint:
                continue
            if sent >= limit:
                complete = False
                break
            row = [
                f"addr.{sent}={item.address_text}",
                f"last.{sent}={_ts(stamp(item.last))}",
                f"first.{sent}={_ts(stamp(item.first))}",
                f"ct.{sent}={item.count}",
                f"mv.{sent}={item.mode_version & 0xFF}",
                f"rs.{sent}=0x{wire:x}",
            ]
            extra = sum(len(r) + 4 for r in row)
            if size + extra + 64 > budget:
                complete = False
                break
            rows.extend(row)
            size += extra
            sent += 1
        if complete:
            rows.append(f"now={_ts(snap.clock)}")
            newest = max((m.last for m in snap.mru), default=None)
            if newest is not None:
                rows.append(f"last.newest={_ts(stamp(newest))}")
        text = join_text(rows)
        return ControlReply(fragments(header, text, snap.status_word(), 0, leap))


def _find(snap: ControlSnapshot, associd: int) -> PeerInfo | None:
    for peer in snap.peers:
        if peer.associd == associd:
            return peer
    return None


def _int(text: str | None, default: int, base: int = 0) -> int:
    if text is None:
        return default
    try:
        return int(text, base)
    except ValueError:
        return default
