"""Interleaved mode, client side (`server HOST xleave`), and the kernel's T1.

The server in these tests follows chrony's rules (ntp_core.c, 4.2+): its receive timestamps
have the lowest bit set; a request whose origin is one of them (and whose receive field
differs from its transmit field) gets, if the server kept that request's reply, an
interleaved reply: origin = the request's receive field, receive = T2 of this request,
transmit = the kernel's transmit timestamp of the reply it kept.
"""

from __future__ import annotations

import itertools

import pytest

from pyntpd.proto.packet import HEADER, NtpHeader, decode, li_vn_mode
from pyntpd.proto.source import (
    INTERLEAVED_MAX_UNANSWERED,
    Association,
    SourceDrop,
    SourceSpec,
    Stamp,
)
from pyntpd.proto.timestamp import ntp_add, seconds_to_short, unix_to_ntp

T0 = 1_800_000_000.0
AHEAD = 0.005  # the server's clock is this far ahead of ours
ONE_WAY = 0.001
PROCESSING = 20e-6  # the server's T2 -> its user-space T3
KERNEL_LAG = 30e-6  # its user-space T3 -> the kernel's T3, as the reply left
USER_LEAD = 40e-6  # our user-space T1 is read this long before our request leaves
POLL = 16.0
BASE = unix_to_ntp(T0)


def stamp(t: float) -> int:
    """Local time T0 + t as an NTP timestamp, exactly (unix_to_ntp of T0 + t would round
    to a quarter microsecond)."""
    return ntp_add(BASE, t)


def assoc(xleave: bool = True) -> Association:
    counter = itertools.count(0x1111_0000_0000_0001)
    a = Association(SourceSpec("192.0.2.1", minpoll=4, maxpoll=4, xleave=xleave),
                    random_transmit=lambda: next(counter))
    a.start(T0)
    return a


class Server:
    """An interleaved server (chrony's rules) on a clock AHEAD of ours."""

    def __init__(self) -> None:
        self.kept: dict[int, int] = {}  # our receive timestamp -> kernel transmit timestamp

    def answer(self, request: NtpHeader, sent_at: float, *, keep: bool = True,
               stratum: int = 2) -> tuple[bytes, int, float]:
        """(reply, t4, arrival): the reply to `request` sent at local time `sent_at`."""
        t2 = server_t2(sent_at)
        t3 = ntp_add(t2, PROCESSING) & ~1
        kept = self.kept.pop(request.origin, None) if request.origin & 1 else None
        interleaved = kept is not None and request.receive != request.transmit
        data = HEADER.pack(li_vn_mode(0, 4, 4), stratum, 4, -20, seconds_to_short(0.01),
                           seconds_to_short(0.02), b"GPS\0", stamp(sent_at - 10),
                           request.receive if interleaved else request.transmit, t2,
                           kept if interleaved else t3)
        if keep:
            self.kept[t2] = ntp_add(t3, KERNEL_LAG)
        arrival = sent_at + 2 * ONE_WAY + PROCESSING + KERNEL_LAG
        return data, stamp(arrival), T0 + arrival


def poll(a: Association, at: float, kernel: bool = False) -> NtpHeader:
    """A request that leaves at T0 + `at`; `kernel`: the kernel says so (SO_TIMESTAMPING)."""
    data = a.make_request(T0 + at)
    assert data is not None
    a.sent(stamp(at - USER_LEAD))
    if kernel:
        assert a.transmitted(stamp(at))
    return decode(data).header


def server_t2(sent_at: float) -> int:
    return stamp(sent_at + ONE_WAY + AHEAD) | 1


def exchange(a: Association, server: Server, at: float, **kwargs: object):
    request = poll(a, at, kernel=True)
    data, t4, arrival = server.answer(request, at, **kwargs)  # type: ignore[arg-type]
    return request, a.receive(data, t4, arrival)


# --- requests ---------------------------------------------------------------------------

def test_the_first_request_is_a_basic_one():
    request = poll(assoc(), 0.0)
    assert (request.origin, request.receive) == (0, 0)


def test_after_a_reply_the_request_names_the_servers_receive_timestamp():
    a, server = assoc(), Server()
    exchange(a, server, 0.0)
    request = poll(a, POLL)
    assert request.origin == server_t2(0.0)
    assert request.receive not in (0, request.transmit)
    assert abs(request.receive - BASE) > 1 << 40  # random, not our clock


def test_without_xleave_requests_stay_basic():
    a, server = assoc(xleave=False), Server()
    exchange(a, server, 0.0)
    request = poll(a, POLL)
    assert (request.origin, request.receive) == (0, 0)


def test_after_four_unanswered_requests_the_requests_go_back_to_basic():
    a, server = assoc(), Server()
    exchange(a, server, 0.0)
    for n in range(INTERLEAVED_MAX_UNANSWERED):
        assert poll(a, (n + 1) * POLL).receive != 0  # unanswered, still interleaved
    request = poll(a, (INTERLEAVED_MAX_UNANSWERED + 1) * POLL)
    assert (request.origin, request.receive) == (0, 0)


def test_a_clock_step_forgets_the_previous_exchange():
    a, server = assoc(), Server()
    exchange(a, server, 0.0)
    a.clock_stepped(0.5)
    request = poll(a, POLL)
    assert (request.origin, request.receive) == (0, 0)


# --- replies ----------------------------------------------------------------------------

def test_a_basic_reply_gives_a_sample_with_the_user_space_transmit_timestamp():
    a, server = assoc(), Server()
    _, sample = exchange(a, server, 0.0)
    assert sample is not None
    # T3 read before the kernel sent the reply: the return path looks KERNEL_LAG longer.
    assert sample.offset == pytest.approx(AHEAD - KERNEL_LAG / 2, abs=1e-8)
    assert a.interleaved == 0


def test_the_first_interleaved_reply_completes_an_exchange_already_used():
    """chrony 4.3's rule: the exchange gave its sample in basic mode; no second one."""
    a, server = assoc(), Server()
    exchange(a, server, 0.0)
    _, sample = exchange(a, server, POLL)
    assert sample is None
    assert a.drops == {SourceDrop.INTERLEAVED_SPENT: 1}
    assert a.reach == 0b11  # the server did answer


def test_an_interleaved_reply_completes_the_previous_exchange_with_the_kernel_stamp():
    a, server = assoc(), Server()
    exchange(a, server, 0.0)
    exchange(a, server, POLL)
    _, sample = exchange(a, server, 2 * POLL)
    assert sample is not None
    # The exchange sent at T0 + POLL, with the server's T3 as its reply left: exact.
    assert sample.offset == pytest.approx(AHEAD, abs=1e-8)
    assert sample.delay == pytest.approx(2 * ONE_WAY, abs=1e-8)
    assert sample.local_time == pytest.approx(T0 + POLL + 2 * ONE_WAY + PROCESSING
                                              + KERNEL_LAG)
    assert a.interleaved == 1


def test_a_basic_reply_to_an_interleaved_request_is_used_as_basic():
    """Fallback: the server kept nothing for us (restarted, or another server)."""
    a, server = assoc(), Server()
    exchange(a, server, 0.0)
    server.kept.clear()
    _, sample = exchange(a, server, POLL)
    assert sample is not None and sample.offset == pytest.approx(AHEAD - KERNEL_LAG / 2,
                                                                 abs=1e-8)
    assert a.drops == {}


def test_a_reply_naming_our_previous_requests_receive_field_is_refused():
    """A spoofed or stale interleaved reply: only this request's random receive field is an
    answer, and a refused reply leaves the request outstanding."""
    a, server = assoc(), Server()
    exchange(a, server, 0.0)
    stale = poll(a, POLL)
    request = poll(a, 2 * POLL)
    data, t4, arrival = server.answer(stale, POLL)
    assert a.receive(data, t4, arrival) is None
    assert a.drops == {SourceDrop.BOGUS_ORIGIN: 1}
    # The server spent the timestamp it kept on the stale request: a basic reply.
    data, t4, arrival = server.answer(request, 2 * POLL)
    assert a.receive(data, t4, arrival) is not None  # the request was still outstanding
    assert a.drops == {SourceDrop.BOGUS_ORIGIN: 1}


@pytest.mark.parametrize("origin", ["servers_receive", "zero"])
def test_a_spoofed_interleaved_reply_is_refused(origin: str):
    a, server = assoc(), Server()
    exchange(a, server, 0.0)
    request = poll(a, POLL)
    forged = HEADER.pack(li_vn_mode(0, 4, 4), 1, 4, -20, 0, 0, b"GPS\0", 0,
                         request.origin if origin == "servers_receive" else 0,
                         stamp(POLL) | 1, stamp(1.0))
    assert a.receive(forged, stamp(POLL + 0.002), T0 + POLL + 0.002) is None
    assert a.drops == {SourceDrop.BOGUS_ORIGIN: 1}
    data, t4, arrival = server.answer(request, POLL)
    a.receive(data, t4, arrival)
    assert a.drops[SourceDrop.INTERLEAVED_SPENT] == 1  # the request was still outstanding


def test_a_non_interleaved_association_refuses_an_interleaved_reply():
    a, server = assoc(xleave=False), Server()
    exchange(a, server, 0.0)
    request = poll(a, POLL)
    tampered = request._replace(receive=0x5EED, origin=server_t2(0.0))
    data, t4, arrival = server.answer(tampered, POLL)
    assert a.receive(data, t4, arrival) is None
    assert a.drops == {SourceDrop.BOGUS_ORIGIN: 1}


def test_a_repeated_transmit_timestamp_with_a_new_receive_timestamp_is_no_duplicate():
    """A server without kernel stamps repeats, interleaved, its previous reply's T3."""
    a, server = assoc(), Server()
    exchange(a, server, 0.0)
    request = poll(a, POLL)
    basic_t3 = a._last_server_transmit
    server.kept[request.origin] = basic_t3
    data, t4, arrival = server.answer(request, POLL)
    a.receive(data, t4, arrival)
    assert SourceDrop.DUPLICATE not in a.drops
    assert a.drops == {SourceDrop.INTERLEAVED_SPENT: 1}


def test_a_replayed_interleaved_reply_is_a_duplicate():
    a, server = assoc(), Server()
    exchange(a, server, 0.0)
    request = poll(a, POLL)
    data, t4, arrival = server.answer(request, POLL)
    a.receive(data, t4, arrival)
    assert a.receive(data, t4, arrival) is None
    assert a.drops[SourceDrop.DUPLICATE] == 1


# --- the kernel's T1 --------------------------------------------------------------------

def test_the_kernels_transmit_timestamp_becomes_t1():
    a, server = assoc(xleave=False), Server()
    request = poll(a, 0.0, kernel=True)
    data, t4, arrival = server.answer(request, 0.0)
    sample = a.receive(data, t4, arrival)
    assert sample is not None
    # Only the server's late user-space T3 is left in the delay.
    assert sample.delay == pytest.approx(2 * ONE_WAY + KERNEL_LAG, abs=1e-8)
    assert a.transmit_stamps == {Stamp.KERNEL: 1}


def test_without_a_kernel_stamp_t1_is_the_user_space_one_and_counted():
    a, server = assoc(xleave=False), Server()
    request = poll(a, 0.0)
    data, t4, arrival = server.answer(request, 0.0)
    sample = a.receive(data, t4, arrival)
    assert sample is not None
    assert sample.delay == pytest.approx(2 * ONE_WAY + KERNEL_LAG + USER_LEAD, abs=1e-8)
    assert a.transmit_stamps == {Stamp.DAEMON: 1}


@pytest.mark.parametrize("lag", [-1e-6, 1.5])
def test_an_implausible_kernel_stamp_is_not_taken(lag: float):
    """Earlier than the read before send(), or more than a second after: another datagram's."""
    a = assoc(xleave=False)
    poll(a, 0.0)
    assert a.transmitted(stamp(lag - USER_LEAD)) is False


def test_a_kernel_stamp_with_no_request_outstanding_is_not_taken():
    a, server = assoc(xleave=False), Server()
    request = poll(a, 0.0)
    data, t4, arrival = server.answer(request, 0.0)
    a.receive(data, t4, arrival)
    assert a.transmitted(stamp(0.0)) is False


def test_interleaved_samples_count_the_stamp_of_the_exchange_they_complete():
    a, server = assoc(), Server()
    exchange(a, server, 0.0)  # basic, kernel T1: one sample
    request = poll(a, POLL)  # no kernel stamp for this one
    data, t4, arrival = server.answer(request, POLL)
    a.receive(data, t4, arrival)
    exchange(a, server, 2 * POLL)  # completes the exchange without a kernel T1
    assert a.transmit_stamps == {Stamp.KERNEL: 1, Stamp.DAEMON: 1}
