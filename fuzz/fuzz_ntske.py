"""atheris harness: NTS-KE messages (RFC 8915 §4) as the server and the client read them.

    .venv/bin/python fuzz/fuzz_ntske.py fuzz/corpus/ntske -max_total_time=60

The first input byte picks the side (bit 0: server reading a request, client reading a
response) and how the TLS stream is cut into reads (bits 1-7: chunk length); the rest is the
stream. Checked: `MessageReader` raises only NtsKeError, within its limits, and reading the
stream in pieces gives what reading it whole gives; the server's negotiation raises only
NtsKeError and what it answers reads back (a client accepts it when something was agreed);
the client's check raises only NtsKeError and keeps at most MAX_COOKIES non-empty cookies.
"""

import sys

from run import require

require("pyntpd.proto.ntske", "NTS-KE comes with the nts branch")

import atheris  # noqa: E402

with atheris.instrument_imports():
    from pyntpd.proto import ntske

COOKIES = [bytes([i]) * 100 for i in range(ntske.MAX_COOKIES)]


def _stream(data: bytes, step: int, limits: ntske.Limits) -> list[ntske.Record] | None:
    """The records read `step` bytes at a time, or None if the reader refused them."""
    reader = ntske.MessageReader(limits)
    records = None
    try:
        for start in range(0, len(data), step):
            got = reader.feed(data[start : start + step])
            records = records or got
        if records is None:
            reader.eof()
    except ntske.NtsKeError:
        return None
    return records


def _whole(data: bytes, limits: ntske.Limits) -> list[ntske.Record] | None:
    try:
        return ntske.parse_message(data, limits)
    except ntske.NtsKeError:
        return None


def _server(records: list[ntske.Record]) -> None:
    try:
        agreed = ntske.negotiate(records)
    except ntske.NtsKeError as exc:
        answer = ntske.parse_message(ntske.error_message(exc.code), ntske.RESPONSE_LIMITS)
        assert answer[0].type == ntske.RecordType.ERROR
        return
    response = ntske.server_response(agreed, COOKIES, "ntp.example.org", 123)
    answer = ntske.parse_message(response, ntske.RESPONSE_LIMITS)
    if agreed.ok:
        result = ntske.parse_response(answer)
        assert result.cookies == tuple(COOKIES) and result.port == 123


def _client(records: list[ntske.Record]) -> None:
    try:
        result = ntske.parse_response(records)
    except ntske.NtsKeError:
        return
    assert 1 <= len(result.cookies) <= ntske.MAX_COOKIES and all(result.cookies)
    assert result.aead == ntske.AEAD_AES_SIV_CMAC_256


def test_one_input(data: bytes) -> None:
    if not data:
        return
    server = not data[0] & 1
    step = 1 + (data[0] >> 1)
    stream = data[1:]
    limits = ntske.REQUEST_LIMITS if server else ntske.RESPONSE_LIMITS
    records = _whole(stream, limits)
    streamed = _stream(stream, step, limits)
    assert (records is None) == (streamed is None), "read in pieces, read whole disagree"
    if records is None:
        return
    assert records == streamed, "read in pieces, read whole disagree"
    assert len(records) <= limits.max_records
    assert all(len(r.body) <= limits.max_body for r in records)
    assert records[-1].type == ntske.RecordType.END_OF_MESSAGE
    if server:
        _server(records)
    else:
        _client(records)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
