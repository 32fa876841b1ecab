"""Interleaved mode, server side: the transmit timestamps of our replies, kept for the next
request (chrony's server interleaved mode, 4.2 and later; RFC 9769).

A reply can only carry a transmit timestamp read before it is sent; the kernel's, taken as
the datagram leaves, exists afterwards. A client in interleaved mode sends as its origin our
receive timestamp of its previous request; if we kept the reply to that request, we answer
with origin = the request's receive field, receive = this request's T2 and transmit = the
kernel's timestamp of that earlier reply. The client tells the two kinds of reply apart by
the origin (its transmit field: basic; its receive field: interleaved).

Which requests may be interleaved (chrony's rules): NTPv4, an origin with the lowest bit
set -- every receive timestamp we send has it set and every transmit timestamp has it clear,
so a basic client naming our transmit timestamp (ntpd's clients do) or zero never costs a
look-up -- and a receive field that differs from the transmit field. Every such request's
reply is kept, answered interleaved or not (so the third reply to a new client is the first
interleaved one), and each kept reply is used once.

The log is keyed by our receive timestamp, not by client, so clients behind one NAT address
do not overwrite each other (the reason chrony 4.2 moved to this); an entry also records
the client's address, and a request from another address does not get it. Entries are few
(one live one per interleaved client) and bounded: when full, the oldest goes, and its
client gets a basic reply next time.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyntpd.proto.timestamp import ntp_diff

# How much later than the stamp read before the send the kernel's may be (chrony's
# MAX_TX_DELAY); anything else is not this reply's.
MAX_TRANSMIT_DELAY = 1.0
LOW_BIT = 1
NOT_LOW_BIT = ~1 & 0xFFFF_FFFF_FFFF_FFFF


def may_interleave(data: bytes | bytearray | memoryview) -> bool:
    """A client request that names one of our receive timestamps as its origin: NTPv4, the
    origin's lowest bit set, receive field != transmit field."""
    return (data[0] & 0x38 == 0x20 and data[31] & LOW_BIT == LOW_BIT
            and data[32:40] != data[40:48])


@dataclass(frozen=True, slots=True)
class InterleavedReply:
    """A reply to a request that may be interleaved, for the serving path: it is sent with
    a kernel transmit timestamp asked for, and kept under its receive timestamp."""

    prefix: bytes  # the reply's first 40 bytes
    transmit: int  # interleaved: the kept transmit timestamp; 0: basic, read it when sending
    receive: int  # our receive timestamp of the request, as in the reply: the key
    client: int  # the client's address (proto.access.address_key)
    address: int
    is_v6: bool
    port: int


class TransmitLog:
    """Our receive timestamp of a request -> the transmit timestamp of our reply to it."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("the log needs room for one entry")
        self.max_entries = max_entries
        # receive timestamp -> [transmit timestamp, client, from the kernel]; oldest first
        self._entries: dict[int, list[int]] = {}
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def keep(self, receive: int, transmit: int, client: int) -> None:
        """The reply to the request received at `receive` left with `transmit` read just
        before the send (the kernel's may follow: `kernel_stamp`)."""
        entries = self._entries
        entries.pop(receive, None)  # a repeated key is a new reply: it goes to the end
        if len(entries) >= self.max_entries:
            del entries[next(iter(entries))]
            self.evicted += 1
        entries[receive] = [transmit, client, 0]

    def kernel_stamp(self, receive: int, transmit: int) -> bool:
        """The kernel's transmit timestamp of the reply kept under `receive`; taken if it
        is no earlier than the one read before the send and at most MAX_TRANSMIT_DELAY
        later. True if taken."""
        entry = self._entries.get(receive)
        if entry is None or entry[2] or not 0.0 <= ntp_diff(transmit, entry[0]) <= (
                MAX_TRANSMIT_DELAY):
            return False
        entry[0], entry[2] = transmit, 1
        return True

    def take(self, origin: int, client: int) -> tuple[int, bool] | None:
        """(transmit timestamp, from the kernel) of the reply to the request received at
        `origin` from `client`, once; None if none is kept."""
        entry = self._entries.get(origin)
        if entry is None or entry[1] != client:
            return None
        del self._entries[origin]
        return entry[0], bool(entry[2])
