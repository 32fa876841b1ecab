"""NTS Key Establishment (RFC 8915 §4): the record codec and both sides of the negotiation.

Sans-IO: the TLS session (daemon/ntsketls) feeds the bytes it decrypted to a `MessageReader`
and sends what `server_response` / `client_request` encode. Keys come from the TLS exporter,
which only the daemon can call; `exporter_context` says what to ask it for.

A record is: critical bit + 15-bit type, 16-bit body length, body. Every limit is explicit,
so a hostile peer costs at most `max_message` bytes of buffer and one pass over them:
- a record body longer than `max_body`, a message of more than `max_records` records or
  more than `max_message` bytes is refused (`OversizedMessage`), before it is buffered;
- a connection that ends inside a record or before End of Message is `Truncated`;
- anything after End of Message, an End of Message with a body, or a record of the wrong
  size is a `BadRequest`; an unknown critical record is `UnrecognisedCritical`.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

ALPN = b"ntske/1"
DEFAULT_PORT = 4460
EXPORTER_LABEL = b"EXPORTER-network-time-security"
PROTOCOL_NTPV4 = 0
AEAD_AES_SIV_CMAC_256 = 15  # RFC 5297 via the IANA AEAD registry
KEY_LENGTHS = {AEAD_AES_SIV_CMAC_256: 32}
MAX_COOKIES = 8
# A cookie the client keeps: chrony's bound (NKE_MAX_COOKIE_LENGTH 256, and a multiple of 4,
# as an extension field's body must be); ntpsec's is 192. Each request carries a cookie and
# up to seven placeholders of its size: 1,024-byte cookies from a hostile server would make
# every request 8 KiB.
MAX_COOKIE_LENGTH = 256


def usable_cookie(body: bytes) -> bool:
    return 0 < len(body) <= MAX_COOKIE_LENGTH and len(body) % 4 == 0

_HEAD = struct.Struct("!HH")
_U16 = struct.Struct("!H")
CRITICAL = 0x8000


class RecordType(enum.IntEnum):
    END_OF_MESSAGE = 0
    NEXT_PROTOCOL = 1
    ERROR = 2
    WARNING = 3
    AEAD_ALGORITHM = 4
    NEW_COOKIE = 5
    SERVER = 6
    PORT = 7


class ErrorCode(enum.IntEnum):
    UNRECOGNISED_CRITICAL = 0
    BAD_REQUEST = 1
    INTERNAL_SERVER_ERROR = 2


class NtsKeError(ValueError):
    """A message this side refuses; `code` is what a server answers with."""

    code = ErrorCode.BAD_REQUEST
    kind = "bad_request"


class Truncated(NtsKeError):
    kind = "truncated"


class OversizedMessage(NtsKeError):
    kind = "oversized"


class BadRequest(NtsKeError):
    kind = "bad_request"


class UnrecognisedCritical(NtsKeError):
    code = ErrorCode.UNRECOGNISED_CRITICAL
    kind = "unrecognised_critical"


class ServerError(NtsKeError):
    """The server answered with an Error record (client side)."""

    kind = "server_error"


@dataclass(frozen=True, slots=True)
class Limits:
    max_body: int = 1024
    max_records: int = 64
    max_message: int = 4096


# A request is a few dozen bytes; a response carries eight cookies of at most a few hundred.
REQUEST_LIMITS = Limits(max_body=256, max_records=32, max_message=1024)
RESPONSE_LIMITS = Limits(max_body=1024, max_records=32, max_message=16384)


@dataclass(frozen=True, slots=True)
class Record:
    type: int
    body: bytes = b""
    critical: bool = False

    def encode(self) -> bytes:
        head = self.type | (CRITICAL if self.critical else 0)
        return _HEAD.pack(head, len(self.body)) + self.body


def encode_records(records: list[Record]) -> bytes:
    return b"".join(r.encode() for r in records)


def _u16_list(values: list[int] | tuple[int, ...]) -> bytes:
    return b"".join(_U16.pack(v) for v in values)


def _parse_u16_list(record: Record) -> list[int]:
    body = record.body
    if len(body) % 2:
        raise BadRequest(f"record type {record.type} has an odd body length {len(body)}")
    return [v for (v,) in _U16.iter_unpack(body)]


class MessageReader:
    """Accumulates one NTS-KE message from a byte stream, strictly and within `limits`."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._buffer = bytearray()
        self._records: list[Record] = []
        self._total = 0
        self.done = False

    def feed(self, data: bytes) -> list[Record] | None:
        """The whole message once End of Message has arrived, else None; raises
        NtsKeError for anything malformed or over the limits."""
        if self.done:
            if data:
                raise BadRequest("data after End of Message")
            return self._records
        self._total += len(data)
        if self._total > self.limits.max_message:
            raise OversizedMessage(f"message longer than {self.limits.max_message} bytes")
        self._buffer += data
        buf = self._buffer
        pos = 0
        while len(buf) - pos >= _HEAD.size:
            head, length = _HEAD.unpack_from(buf, pos)
            if length > self.limits.max_body:
                raise OversizedMessage(f"record body of {length} bytes (limit "
                                       f"{self.limits.max_body})")
            if len(buf) - pos - _HEAD.size < length:
                break
            if len(self._records) >= self.limits.max_records:
                raise OversizedMessage(f"more than {self.limits.max_records} records")
            body = bytes(buf[pos + _HEAD.size : pos + _HEAD.size + length])
            pos += _HEAD.size + length
            record = Record(head & ~CRITICAL, body, bool(head & CRITICAL))
            self._records.append(record)
            if record.type == RecordType.END_OF_MESSAGE:
                if body:
                    raise BadRequest("End of Message with a body")
                if pos != len(buf):
                    raise BadRequest("data after End of Message")
                self.done = True
                del buf[:]
                return self._records
        del buf[:pos]
        return None

    def eof(self) -> None:
        """The peer closed its side: unless the message is complete, it was truncated."""
        if not self.done:
            what = "inside a record" if self._buffer else "before End of Message"
            raise Truncated(f"connection closed {what}")


def parse_message(data: bytes, limits: Limits = Limits()) -> list[Record]:
    """A whole message at once (tests, fuzzing)."""
    reader = MessageReader(limits)
    records = reader.feed(data)
    if records is None:
        reader.eof()
    assert records is not None
    return records


def exporter_context(aead: int, server_to_client: bool, protocol: int = PROTOCOL_NTPV4) -> bytes:
    """RFC 8915 §5.1: protocol id || AEAD id || 0x00 (C2S) or 0x01 (S2C)."""
    return _U16.pack(protocol) + _U16.pack(aead) + (b"\x01" if server_to_client else b"\x00")


def error_message(code: ErrorCode) -> bytes:
    return encode_records([
        Record(RecordType.ERROR, _U16.pack(code), critical=True),
        Record(RecordType.END_OF_MESSAGE, critical=True),
    ])


# --- server side ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What a server agreed to: `protocol`/`aead` None when nothing was in common (the
    response then says so with empty records and carries no cookies)."""

    protocol: int | None
    aead: int | None

    @property
    def ok(self) -> bool:
        return self.protocol is not None and self.aead is not None


def negotiate(records: list[Record], supported_aeads: tuple[int, ...] = (
        AEAD_AES_SIV_CMAC_256,)) -> Negotiated:
    """The server's decision on a client's request; raises NtsKeError to answer an Error."""
    protocols: list[int] | None = None
    aeads: list[int] | None = None
    for record in records:
        kind = record.type
        if kind == RecordType.NEXT_PROTOCOL:
            if protocols is not None:
                raise BadRequest("more than one Next Protocol record")
            if not record.critical:
                raise BadRequest("Next Protocol record without the critical bit")
            protocols = _parse_u16_list(record)
        elif kind == RecordType.AEAD_ALGORITHM:
            if aeads is not None:
                raise BadRequest("more than one AEAD Algorithm record")
            aeads = _parse_u16_list(record)
        elif kind in (RecordType.ERROR, RecordType.WARNING):
            raise BadRequest("a request carrying an Error or Warning record")
        elif kind in (RecordType.END_OF_MESSAGE, RecordType.NEW_COOKIE, RecordType.SERVER,
                      RecordType.PORT):
            # A client may ask for a server or port; this server always names its own.
            if kind == RecordType.PORT and len(record.body) != 2:
                raise BadRequest("Port record of the wrong size")
        elif record.critical:
            raise UnrecognisedCritical(f"unrecognised critical record type {kind}")
    if protocols is None:
        raise BadRequest("no Next Protocol record")
    protocol = PROTOCOL_NTPV4 if PROTOCOL_NTPV4 in protocols else None
    if protocol is not None and aeads is None:
        raise BadRequest("no AEAD Algorithm record")
    aead = next((a for a in aeads or () if a in supported_aeads), None)
    return Negotiated(protocol, aead)


def server_response(
    negotiated: Negotiated,
    cookies: list[bytes],
    server: str | None = None,
    port: int | None = None,
) -> bytes:
    records = [Record(RecordType.NEXT_PROTOCOL,
                      b"" if negotiated.protocol is None else _U16.pack(negotiated.protocol),
                      critical=True)]
    if negotiated.protocol is not None:
        records.append(Record(RecordType.AEAD_ALGORITHM,
                              b"" if negotiated.aead is None else _U16.pack(negotiated.aead),
                              critical=True))
    if negotiated.ok:
        records += [Record(RecordType.NEW_COOKIE, cookie) for cookie in cookies]
        if server is not None:
            records.append(Record(RecordType.SERVER, server.encode("ascii"), critical=True))
        if port is not None:
            records.append(Record(RecordType.PORT, _U16.pack(port), critical=True))
    records.append(Record(RecordType.END_OF_MESSAGE, critical=True))
    return encode_records(records)


# --- client side ---------------------------------------------------------------------------


def client_request(aeads: tuple[int, ...] = (AEAD_AES_SIV_CMAC_256,)) -> bytes:
    return encode_records([
        Record(RecordType.NEXT_PROTOCOL, _U16.pack(PROTOCOL_NTPV4), critical=True),
        Record(RecordType.AEAD_ALGORITHM, _u16_list(aeads), critical=True),
        Record(RecordType.END_OF_MESSAGE, critical=True),
    ])


@dataclass(frozen=True, slots=True)
class KeResult:
    """A successful exchange, before the keys are exported: the cookies and where to send
    NTP (None: the NTS-KE server's own address, port 123)."""

    aead: int
    cookies: tuple[bytes, ...]
    server: str | None = None
    port: int | None = None
    refused_cookies: int = 0  # not usable_cookie: left out


def parse_response(records: list[Record], aeads: tuple[int, ...] = (
        AEAD_AES_SIV_CMAC_256,)) -> KeResult:
    """Check a server's response; raises NtsKeError (ServerError for an Error record)."""
    protocol: list[int] | None = None
    aead: list[int] | None = None
    cookies: list[bytes] = []
    refused = 0
    server: str | None = None
    port: int | None = None
    for record in records:
        kind = record.type
        if kind == RecordType.ERROR:
            code = _parse_u16_list(record)
            raise ServerError(f"server sent error {code[0] if code else '?'}")
        if kind == RecordType.WARNING:
            raise ServerError("server sent a warning this client does not understand")
        if kind == RecordType.NEXT_PROTOCOL:
            if protocol is not None:
                raise BadRequest("more than one Next Protocol record")
            protocol = _parse_u16_list(record)
        elif kind == RecordType.AEAD_ALGORITHM:
            if aead is not None:
                raise BadRequest("more than one AEAD Algorithm record")
            aead = _parse_u16_list(record)
        elif kind == RecordType.NEW_COOKIE:
            if not usable_cookie(record.body):
                refused += 1
            elif len(cookies) < MAX_COOKIES:
                cookies.append(record.body)
        elif kind == RecordType.SERVER:
            try:
                server = record.body.decode("ascii")
            except UnicodeDecodeError:
                raise BadRequest("Server record is not ASCII") from None
            if not server:
                raise BadRequest("empty Server record")
        elif kind == RecordType.PORT:
            if len(record.body) != 2:
                raise BadRequest("Port record of the wrong size")
            (port,) = _U16.unpack(record.body)
        elif kind != RecordType.END_OF_MESSAGE and record.critical:
            raise UnrecognisedCritical(f"unrecognised critical record type {kind}")
    if protocol != [PROTOCOL_NTPV4]:
        raise BadRequest(f"server did not agree to NTPv4 (next protocol {protocol})")
    if aead is None or len(aead) != 1 or aead[0] not in aeads:
        raise BadRequest(f"server chose no AEAD algorithm this client offered ({aead})")
    if not cookies:
        raise BadRequest("server sent no cookies" if not refused else
                         f"server sent no usable cookie ({refused} refused: each must be "
                         f"1-{MAX_COOKIE_LENGTH} bytes, a multiple of 4)")
    return KeResult(aead[0], tuple(cookies), server, port, refused)
