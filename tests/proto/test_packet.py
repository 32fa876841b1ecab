import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyntpd.proto.packet import (
    HEADER,
    MAX_PACKET_LEN,
    DropReason,
    ExtensionField,
    Mac,
    NtpHeader,
    NtpPacket,
    PacketError,
    decode,
    encode,
    encode_extension,
    li_vn_mode,
    peek_mode,
)


def header(version=4, mode=3, **kw):
    fields = dict(
        li_vn_mode=li_vn_mode(0, version, mode), stratum=0, poll=6, precision=-20,
        root_delay=0, root_dispersion=0, refid=b"\0\0\0\0", reference=0, origin=0,
        receive=0, transmit=0x0123456789ABCDEF,
    )
    fields.update(kw)
    return NtpHeader(**fields)


def raw(version=4, mode=3, trailer=b""):
    return HEADER.pack(*header(version, mode)) + trailer


def ef(field_type, length):
    return struct.pack("!HH", field_type, length) + bytes(length - 4)


def reason(data):
    with pytest.raises(PacketError) as info:
        decode(data)
    return info.value.reason


def test_plain_client_request_decodes_fields():
    p = decode(raw())
    assert (p.header.version, p.header.mode, p.header.poll) == (4, 3, 6)
    assert p.header.transmit == 0x0123456789ABCDEF
    assert p.extensions == () and p.mac is None


def test_47_bytes_is_too_short():
    assert reason(raw()[:47]) is DropReason.TOO_SHORT


def test_oversized_datagram_is_too_long():
    assert reason(raw(trailer=ef(0x1234, MAX_PACKET_LEN))) is DropReason.TOO_LONG


@pytest.mark.parametrize("version", [0, 5, 6, 7])
def test_unknown_versions_are_refused(version):
    assert reason(raw(version=version)) is DropReason.BAD_VERSION


def test_mode_7_is_refused_by_the_codec():
    assert reason(raw(mode=7)) is DropReason.MODE7


def test_md5_sized_trailer_is_a_mac():
    p = decode(raw(trailer=struct.pack("!I", 7) + b"m" * 16))
    assert p.mac == Mac(7, b"m" * 16)


def test_sha1_sized_trailer_is_a_mac():
    assert decode(raw(trailer=struct.pack("!I", 9) + b"s" * 20)).mac.digest == b"s" * 20


def test_four_byte_trailer_is_a_crypto_nak_not_a_mac():
    mac = decode(raw(trailer=bytes(4))).mac
    assert mac is not None and mac.is_crypto_nak


@pytest.mark.parametrize("length", [1, 8, 12, 16, 17, 22])
def test_trailer_of_24_bytes_or_less_that_is_not_a_mac_is_refused(length):
    assert reason(raw(trailer=bytes(length))) is DropReason.BAD_TRAILER


def test_16_byte_extension_field_alone_is_read_as_a_bad_mac():
    # RFC 7822: without a MAC the last extension field must be at least 28 bytes.
    assert reason(raw(trailer=ef(0x0104, 16))) is DropReason.BAD_TRAILER


def test_28_byte_extension_field_alone_is_accepted():
    p = decode(raw(trailer=ef(0x0104, 28)))
    assert p.extensions == (ExtensionField(0x0104, bytes(24)),)


def test_extension_fields_followed_by_a_mac():
    p = decode(raw(trailer=ef(0x0104, 16) + ef(0x0204, 32) + struct.pack("!I", 1) + bytes(20)))
    assert [e.field_type for e in p.extensions] == [0x0104, 0x0204]
    assert p.mac is not None and p.mac.key_id == 1


def test_extension_length_not_multiple_of_four_is_refused():
    bad = struct.pack("!HH", 0x0104, 30) + bytes(26)
    assert reason(raw(trailer=bad)) is DropReason.BAD_EXTENSION


def test_extension_length_below_16_is_refused():
    assert reason(raw(trailer=struct.pack("!HH", 0x0104, 8) + bytes(28))) is \
        DropReason.BAD_EXTENSION


def test_extension_longer_than_the_datagram_is_refused():
    assert reason(raw(trailer=struct.pack("!HH", 0x0104, 64) + bytes(28))) is \
        DropReason.BAD_EXTENSION


def test_extension_fields_are_refused_in_ntpv3():
    assert reason(raw(version=3, trailer=ef(0x0104, 28))) is DropReason.BAD_TRAILER


def test_encode_is_the_inverse_of_decode():
    p = NtpPacket(header(), (ExtensionField(0x0104, b"x" * 28),), Mac(3, b"d" * 16))
    assert decode(encode(p)) == p


def test_extension_values_are_padded_to_four_bytes_and_sixteen_minimum():
    assert len(encode_extension(ExtensionField(1, b"abc"))) == 16
    assert len(encode_extension(ExtensionField(1, b"x" * 13))) == 20


def test_peek_mode_of_empty_datagram_is_none():
    assert peek_mode(b"") is None and peek_mode(b"\x1e") == 6


@given(st.binary(max_size=1400))
def test_decode_never_raises_anything_but_packet_error(data):
    with contextlib.suppress(PacketError):
        decode(data)


@given(
    st.binary(min_size=48, max_size=48),
    st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=64)), max_size=4),
)
def test_valid_packets_round_trip(head, fields):
    h = NtpHeader._make(HEADER.unpack(head))._replace(li_vn_mode=li_vn_mode(0, 4, 3))
    exts = []
    for t, v in fields:
        v = v + bytes(-len(v) % 4)
        exts.append(ExtensionField(t, v + bytes(max(0, 24 - len(v)))))
    p = NtpPacket(h, tuple(exts), Mac(5, bytes(20)))
    assert decode(encode(p)) == p


# --- decode_mac: the signed-request fast path against the full codec -----------------------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pyntpd.proto.packet import MAX_LEGACY_MAC_LEN, decode_mac  # noqa: E402


def _decoded_mac(data: bytes) -> object:
    try:
        return decode(data).mac
    except PacketError as err:
        return err.reason


def _fast_mac(data: bytes) -> object:
    try:
        return decode_mac(data, (data[0] >> 3) & 7)
    except PacketError as err:
        return err.reason


@given(st.integers(1, 4), st.integers(0, 5), st.binary(max_size=47),
       st.binary(max_size=MAX_LEGACY_MAC_LEN))
def test_decode_mac_finds_what_decode_finds(version, mode, header_rest, trailer):
    data = bytes([version << 3 | mode]) + header_rest + trailer
    if len(header_rest) < 47:
        data = data[:1 + len(header_rest)]  # too short for a header: no trailer either
    assert _fast_mac(data) == _decoded_mac(data)


def test_decode_mac_refuses_a_datagram_that_can_carry_extension_fields():
    with pytest.raises(ValueError):
        decode_mac(bytes(48 + MAX_LEGACY_MAC_LEN + 4), 4)
