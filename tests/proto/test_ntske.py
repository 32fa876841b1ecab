"""NTS-KE records (RFC 8915 §4): the codec's limits and both sides of the negotiation."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyntpd.proto import ntske
from pyntpd.proto.ntske import (
    AEAD_AES_SIV_CMAC_256,
    BadRequest,
    ErrorCode,
    Limits,
    MessageReader,
    OversizedMessage,
    Record,
    RecordType,
    ServerError,
    Truncated,
    UnrecognisedCritical,
)

U16 = struct.Struct("!H")
END = Record(RecordType.END_OF_MESSAGE, critical=True)
NEXT_NTPV4 = Record(RecordType.NEXT_PROTOCOL, U16.pack(0), critical=True)
AEAD_SIV = Record(RecordType.AEAD_ALGORITHM, U16.pack(AEAD_AES_SIV_CMAC_256))


def message(*records: Record) -> bytes:
    return ntske.encode_records(list(records))


def test_a_record_is_critical_bit_type_length_body() -> None:
    assert Record(1, b"\x00\x00", critical=True).encode() == b"\x80\x01\x00\x02\x00\x00"
    assert Record(5, b"abc").encode() == b"\x00\x05\x00\x03abc"


def test_the_client_request_round_trips() -> None:
    records = ntske.parse_message(ntske.client_request())
    assert records == [NEXT_NTPV4, Record(RecordType.AEAD_ALGORITHM, U16.pack(15), True), END]


def test_a_message_fed_byte_by_byte_completes_at_end_of_message() -> None:
    reader = MessageReader(ntske.REQUEST_LIMITS)
    data = ntske.client_request()
    results = [reader.feed(data[i : i + 1]) for i in range(len(data))]
    assert all(r is None for r in results[:-1])
    assert results[-1] is not None and results[-1][-1] == END


def test_a_truncated_record_is_refused_when_the_connection_ends() -> None:
    reader = MessageReader(ntske.REQUEST_LIMITS)
    assert reader.feed(ntske.client_request()[:7]) is None
    with pytest.raises(Truncated):
        reader.eof()


def test_a_message_without_end_of_message_is_truncated() -> None:
    with pytest.raises(Truncated):
        ntske.parse_message(message(NEXT_NTPV4, AEAD_SIV))


def test_a_record_body_over_the_limit_is_refused_before_it_is_buffered() -> None:
    reader = MessageReader(Limits(max_body=64, max_records=8, max_message=100_000))
    with pytest.raises(OversizedMessage):
        reader.feed(struct.pack("!HH", 5, 65535))  # just the head of a 64 KiB record


def test_too_many_records_are_refused() -> None:
    many = [Record(RecordType.NEW_COOKIE, b"x")] * 40
    with pytest.raises(OversizedMessage):
        ntske.parse_message(message(NEXT_NTPV4, *many, END), ntske.REQUEST_LIMITS)


def test_a_message_over_the_size_limit_is_refused() -> None:
    reader = MessageReader(ntske.REQUEST_LIMITS)
    with pytest.raises(OversizedMessage):
        reader.feed(bytes(ntske.REQUEST_LIMITS.max_message + 1))


def test_data_after_end_of_message_is_a_bad_request() -> None:
    with pytest.raises(BadRequest):
        ntske.parse_message(message(NEXT_NTPV4, END) + b"\x00")


def test_end_of_message_with_a_body_is_a_bad_request() -> None:
    with pytest.raises(BadRequest):
        ntske.parse_message(message(Record(0, b"xx", True)))


def test_the_server_agrees_to_ntpv4_and_aes_siv() -> None:
    agreed = ntske.negotiate([NEXT_NTPV4, AEAD_SIV, END])
    assert agreed == ntske.Negotiated(0, AEAD_AES_SIV_CMAC_256) and agreed.ok


def test_no_aead_in_common_gets_an_empty_aead_record_and_no_cookies() -> None:
    agreed = ntske.negotiate([NEXT_NTPV4, Record(RecordType.AEAD_ALGORITHM, U16.pack(30)), END])
    assert not agreed.ok
    records = ntske.parse_message(ntske.server_response(agreed, [b"c" * 100]))
    assert Record(RecordType.AEAD_ALGORITHM, b"", True) in records
    assert not [r for r in records if r.type == RecordType.NEW_COOKIE]


def test_no_protocol_in_common_gets_an_empty_next_protocol_record() -> None:
    agreed = ntske.negotiate([Record(RecordType.NEXT_PROTOCOL, U16.pack(0x8000), True), END])
    records = ntske.parse_message(ntske.server_response(agreed, []))
    assert records[0] == Record(RecordType.NEXT_PROTOCOL, b"", True)


@pytest.mark.parametrize("records", [
    [AEAD_SIV, END],  # no next protocol
    [NEXT_NTPV4, END],  # no AEAD
    [NEXT_NTPV4, NEXT_NTPV4, AEAD_SIV, END],  # duplicate
    [NEXT_NTPV4, AEAD_SIV, AEAD_SIV, END],
    [Record(RecordType.NEXT_PROTOCOL, U16.pack(0)), AEAD_SIV, END],  # not critical
    [Record(RecordType.NEXT_PROTOCOL, b"\x00", True), AEAD_SIV, END],  # odd length
    [NEXT_NTPV4, AEAD_SIV, Record(RecordType.ERROR, U16.pack(1), True), END],
    [NEXT_NTPV4, AEAD_SIV, Record(RecordType.PORT, b"\x00", True), END],
], ids=["no-protocol", "no-aead", "two-protocols", "two-aeads", "not-critical", "odd",
        "error-record", "short-port"])
def test_malformed_requests_are_bad_requests(records: list[Record]) -> None:
    with pytest.raises(BadRequest) as info:
        ntske.negotiate(records)
    assert info.value.code == ErrorCode.BAD_REQUEST


def test_an_unknown_critical_record_is_refused_with_its_own_error_code() -> None:
    with pytest.raises(UnrecognisedCritical) as info:
        ntske.negotiate([NEXT_NTPV4, AEAD_SIV, Record(0x1234, b"", True), END])
    assert info.value.code == ErrorCode.UNRECOGNISED_CRITICAL


def test_an_unknown_non_critical_record_is_ignored() -> None:
    assert ntske.negotiate([NEXT_NTPV4, AEAD_SIV, Record(0x1234, b"zz"), END]).ok


def test_the_error_message_is_an_error_record_and_end() -> None:
    records = ntske.parse_message(ntske.error_message(ErrorCode.BAD_REQUEST))
    assert records == [Record(RecordType.ERROR, U16.pack(1), True), END]


def test_exporter_context_is_protocol_aead_direction() -> None:
    assert ntske.exporter_context(15, False) == b"\x00\x00\x00\x0f\x00"
    assert ntske.exporter_context(15, True) == b"\x00\x00\x00\x0f\x01"


def test_the_client_takes_cookies_server_and_port_from_a_response() -> None:
    response = ntske.server_response(ntske.Negotiated(0, 15), [b"a" * 100, b"b" * 100],
                                     server="ntp.example", port=1234)
    result = ntske.parse_response(ntske.parse_message(response, ntske.RESPONSE_LIMITS))
    assert result == ntske.KeResult(15, (b"a" * 100, b"b" * 100), "ntp.example", 1234)


def test_the_client_keeps_at_most_eight_cookies() -> None:
    response = ntske.server_response(ntske.Negotiated(0, 15), [b"c" * 100] * 12)
    result = ntske.parse_response(ntske.parse_message(response, ntske.RESPONSE_LIMITS))
    assert len(result.cookies) == 8


def test_the_client_keeps_no_cookie_over_256_bytes_or_of_a_length_not_a_multiple_of_4(
) -> None:
    """A hostile server's 1,024-byte cookies would make every request 8 KiB (a cookie and
    seven placeholders of its size): the bound is chrony's, 256 bytes and a multiple of 4."""
    response = ntske.server_response(
        ntske.Negotiated(0, 15), [b"a" * 1024, b"b" * 260, b"c" * 102, b"d" * 256, b"e" * 100])
    result = ntske.parse_response(ntske.parse_message(response, ntske.RESPONSE_LIMITS))
    assert result.cookies == (b"d" * 256, b"e" * 100) and result.refused_cookies == 3


def test_a_response_with_no_usable_cookie_is_refused_saying_why() -> None:
    response = ntske.server_response(ntske.Negotiated(0, 15), [b"x" * 1024] * 8)
    with pytest.raises(ntske.NtsKeError, match=r"no usable cookie \(8 refused: each must be "
                                                r"1-256 bytes, a multiple of 4\)"):
        ntske.parse_response(ntske.parse_message(response, ntske.RESPONSE_LIMITS))


def test_the_client_refuses_an_error_response() -> None:
    with pytest.raises(ServerError):
        ntske.parse_response(ntske.parse_message(ntske.error_message(ErrorCode.BAD_REQUEST)))


@pytest.mark.parametrize("response", [
    ntske.server_response(ntske.Negotiated(0, None), []),
    ntske.server_response(ntske.Negotiated(None, None), []),
    ntske.server_response(ntske.Negotiated(0, 15), []),
    message(NEXT_NTPV4, Record(RecordType.AEAD_ALGORITHM, U16.pack(16), True),
            Record(RecordType.NEW_COOKIE, b"c"), END),
    message(NEXT_NTPV4, AEAD_SIV, Record(RecordType.NEW_COOKIE, b"c"),
            Record(RecordType.SERVER, b"\xff", True), END),
    message(NEXT_NTPV4, AEAD_SIV, Record(RecordType.NEW_COOKIE, b"c"),
            Record(0x4321, b"", True), END),
    message(NEXT_NTPV4, AEAD_SIV, Record(RecordType.NEW_COOKIE, b"c"),
            Record(RecordType.WARNING, U16.pack(0), True), END),
], ids=["no-aead", "no-protocol", "no-cookies", "other-aead", "non-ascii-server",
        "unknown-critical", "warning"])
def test_the_client_refuses_a_response_it_cannot_use(response: bytes) -> None:
    with pytest.raises(ntske.NtsKeError):
        ntske.parse_response(ntske.parse_message(response, ntske.RESPONSE_LIMITS))

_records = st.lists(st.builds(Record, st.integers(1, 0x7FFF), st.binary(max_size=64),
                              st.booleans()), max_size=20)


@given(_records)
def test_any_record_list_round_trips_through_the_codec(records: list[Record]) -> None:
    data = message(*records, END)
    assert ntske.parse_message(data) == [*records, END]


@given(st.binary(max_size=300), st.integers(1, 299))
def test_arbitrary_bytes_in_any_split_either_parse_or_raise_the_codec_error(
        data: bytes, split: int) -> None:
    reader = MessageReader(ntske.REQUEST_LIMITS)
    try:
        if reader.feed(data[:split]) is None and reader.feed(data[split:]) is None:
            reader.eof()
    except ntske.NtsKeError:
        pass
