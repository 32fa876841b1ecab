"""The ntp_signd protocol (Samba's ntp_signd.idl): framing, replies, and what we accept back."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyntpd.proto import mssntp
from pyntpd.proto.mssntp import MssntpFailure, ReplyReader, SigndProtocolError, SigndReply
from pyntpd.proto.packet import HEADER, Mac, li_vn_mode

NT_HASH = bytes(range(16))
RID_1102 = (1102).to_bytes(4, "little")
PACKET = HEADER.pack(li_vn_mode(0, 3, 4), 2, 6, -20, 0, 0, b"LOCL", 1, 2, 3, 4)


def frame(version: int, op: int, packet_id: int, signed: bytes = b"") -> bytes:
    body = struct.pack("!III", version, op, packet_id) + signed
    return struct.pack("!I", len(body)) + body


def signed_by_samba(packet: bytes, key_id: bytes) -> bytes:
    """What ntp_signd returns: the packet, the key id, MD5(NT hash || packet)."""
    return packet + key_id + hashlib.md5(NT_HASH + packet, usedforsecurity=False).digest()


def test_request_is_length_version_op_packet_id_padding_key_id_le_and_the_packet():
    framed = mssntp.encode_request(7, RID_1102, PACKET)
    length, version, op, packet_id, pad = struct.unpack_from("!IIIHH", framed)
    assert (length, version, op, packet_id, pad) == (len(framed) - 4, 0, 0, 7, 0)
    assert framed[16:20] == RID_1102 and framed[20:] == PACKET and len(framed) == 68


def test_request_packet_id_wraps_at_16_bits():
    assert struct.unpack_from("!H", mssntp.encode_request(65537, RID_1102, PACKET), 12) == (1,)


def test_authenticator_is_a_key_id_with_sixteen_zero_bytes():
    assert mssntp.is_authenticator(Mac(0x4E040000, bytes(16)))
    assert not mssntp.is_authenticator(Mac(0x4E040000, bytes(15) + b"\1"))
    assert not mssntp.is_authenticator(Mac(0x4E040000, bytes(20)))  # a SHA1-sized MAC


def test_extended_authenticator_is_72_bytes_with_a_zero_64_byte_checksum_in_ntpv3():
    head = HEADER.pack(li_vn_mode(0, 3, 3), 0, 6, -20, 0, 0, b"\0" * 4, 0, 0, 0, 9)
    flags = RID_1102 + b"\0\0\1\1"  # reserved, flags, client hash hints, signature hash id
    assert mssntp.is_extended_request(head + flags + bytes(64))
    assert not mssntp.is_extended_request(head + flags + bytes(63) + b"\1")
    v4 = HEADER.pack(li_vn_mode(0, 4, 3), 0, 6, -20, 0, 0, b"\0" * 4, 0, 0, 0, 9)
    assert not mssntp.is_extended_request(v4 + flags + bytes(64))


def test_reader_cuts_a_success_reply_from_a_stream_given_byte_by_byte():
    data = frame(0, 3, 7, signed_by_samba(PACKET, RID_1102))
    reader = ReplyReader()
    replies = [r for i in range(len(data)) for r in reader.feed(data[i:i + 1])]
    assert replies == [SigndReply(0, 3, 7, signed_by_samba(PACKET, RID_1102))]
    assert reader.pending == 0


def test_reader_returns_every_reply_in_one_read_in_order():
    data = frame(0, 4, 1) + frame(0, 4, 2) + frame(0, 4, 3)[:5]
    reader = ReplyReader()
    assert [r.packet_id for r in reader.feed(data)] == [1, 2]
    assert reader.pending == 5


@pytest.mark.parametrize("length", [0, 11, mssntp.MAX_REPLY_BODY + 1, 0xFFFFFFFF])
def test_reader_refuses_a_length_no_reply_can_have(length: int):
    with pytest.raises(SigndProtocolError):
        ReplyReader().feed(struct.pack("!I", length) + bytes(12))


def test_success_gives_the_signed_packet_to_send():
    signed = signed_by_samba(PACKET, RID_1102)
    assert mssntp.check_reply(SigndReply(0, 3, 7, signed), 7, PACKET, RID_1102) == signed


def test_signing_failure_is_refused():
    reply = SigndReply(0, 4, 7, b"")
    assert mssntp.check_reply(reply, 7, PACKET, RID_1102) is MssntpFailure.REFUSED


def test_a_reply_for_another_request_is_a_protocol_error():
    reply = SigndReply(0, 3, 8, signed_by_samba(PACKET, RID_1102))
    assert mssntp.check_reply(reply, 7, PACKET, RID_1102) is MssntpFailure.PROTOCOL


@pytest.mark.parametrize("signed", [
    signed_by_samba(PACKET[:47] + b"\1", RID_1102),  # another packet than we asked for
    signed_by_samba(PACKET, (1103).to_bytes(4, "little")),  # another key id
    signed_by_samba(PACKET, RID_1102)[:-1],  # a short checksum
    signed_by_samba(PACKET, RID_1102) + b"\0",  # a longer reply than the request
], ids=["other-packet", "other-key", "short", "long"])
def test_signd_cannot_make_us_send_anything_but_what_we_asked_to_sign(signed: bytes):
    reply = SigndReply(0, 3, 7, signed)
    assert mssntp.check_reply(reply, 7, PACKET, RID_1102) is MssntpFailure.PROTOCOL


def test_an_unknown_op_is_a_protocol_error():
    reply = SigndReply(0, 2, 7, signed_by_samba(PACKET, RID_1102))
    assert mssntp.check_reply(reply, 7, PACKET, RID_1102) is MssntpFailure.PROTOCOL


@given(st.lists(st.binary(max_size=200), max_size=20))
def test_any_stream_gives_replies_or_a_protocol_error_and_holds_at_most_one_frame(chunks):
    reader = ReplyReader()
    try:
        for chunk in chunks:
            for reply in reader.feed(chunk):
                assert mssntp.REPLY_HEAD_LEN <= 12 + len(reply.signed) <= mssntp.MAX_REPLY_BODY
            assert reader.pending < 4 + mssntp.MAX_REPLY_BODY
    except SigndProtocolError:
        pass
