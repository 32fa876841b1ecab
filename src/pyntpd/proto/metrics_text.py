"""The daemon's state as Prometheus metrics (text 0.0.4 or OpenMetrics) and as a JSON document.

Pure: `Status.build` takes the mode 6 snapshot (the same collection ntpq sees, built by
daemon.control), the responder's counters and a few process facts, and the renderers turn
it into text or a dict. The daemon's HTTP shell (daemon.metrics) only does the IO.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector

from pyntpd.proto.auth import AuthResult
from pyntpd.proto.control import ControlDrop, ControlSnapshot, PeerInfo
from pyntpd.proto.mssntp import MssntpFailure
from pyntpd.proto.nts import NtsFailure
from pyntpd.proto.packet import DropReason
from pyntpd.proto.server import KISS_DENY, KISS_RATE, KISS_RSTR, ServerCounters
from pyntpd.proto.source import SourceDrop, Stamp
from pyntpd.proto.timestamp import ntp_to_unix

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
KISS_CODES = (KISS_RATE, KISS_DENY, KISS_RSTR)
LEAP_UNSYNCHRONISED = 3

# ntpq's names for the tally codes (its "condition" column).
TALLY_NAMES = {
    "*": "sys.peer", "+": "candidate", "-": "outlier", "x": "falsetick", ".": "excess",
    "#": "backup", "o": "pps.peer", " ": "reject",
}


def _text(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("ascii", "replace")


def refid_text(raw: bytes, stratum: int, refclock: bool) -> str:
    """As ntpq shows it: a code at stratum 0/1/16 or from a reference clock, else the
    upstream's IPv4 address (or the hash of its IPv6 address) in dotted quad."""
    if refclock or stratum <= 1 or stratum >= 16 or len(raw) != 4:
        return _text(raw)
    return ".".join(str(b) for b in raw)


@dataclass(frozen=True, slots=True)
class SourceState:
    address: str
    name: str  # the configured host name, or the address
    refid: str
    stratum: int
    reach: int
    poll: int  # log2 s
    offset: float  # s; NaN before the first sample
    delay: float
    jitter: float
    dispersion: float
    tally: str  # ntpq's tally character
    selected: bool
    refclock: bool = False  # a reference clock driver: no datagrams, no drops
    port: int = 123  # the source's NTP port (0 for a reference clock)
    received: int = 0  # datagrams from the source
    # No sample from them, by why: every SourceDrop, zeros included.
    dropped: Mapping[str, int] = field(default_factory=dict)
    interleaved: int = 0  # samples from interleaved-mode replies
    # Samples by where their T1 came from: every Stamp, zeros included.
    transmit_stamps: Mapping[str, int] = field(default_factory=dict)

    @staticmethod
    def from_peer(peer: PeerInfo) -> SourceState:
        tally = str(peer.tally)
        return SourceState(
            address=peer.srcadr, name=peer.srchost or peer.srcadr,
            refid=refid_text(peer.refid, peer.stratum, peer.refclock),
            stratum=peer.stratum, reach=peer.reach, poll=peer.hpoll,
            offset=peer.offset, delay=peer.delay, jitter=peer.jitter,
            dispersion=peer.dispersion, tally=tally, selected=tally in ("*", "o"),
            refclock=peer.refclock, port=peer.srcport, received=peer.received,
            # a reference clock's readings refused, by its driver's reasons
            dropped=dict(peer.dropped) if peer.refclock else
            {r.value: peer.dropped.get(r.value, 0) for r in SourceDrop},
            interleaved=peer.interleaved,
            transmit_stamps={s.value: peer.transmit_stamps.get(s.value, 0) for s in Stamp})


@dataclass(frozen=True, slots=True)
class BroadcastCounts:
    """The broadcaster's and the broadcast client's counters (proto.broadcast)."""

    sent: int = 0
    unsynchronised: int = 0  # broadcasts not sent: we were unsynchronised
    send_errors: int = 0
    heard: Mapping[str, int] = field(default_factory=dict)  # "sample", or why not


@dataclass(frozen=True, slots=True)
class Status:
    version: str
    start_time: float  # Unix s
    now: float  # Unix s
    leap: int
    stratum: int
    refid: str
    precision: int
    root_delay: float
    root_dispersion: float
    reference_time: float | None  # Unix s of the last clock update
    offset: float
    frequency: float
    jitter: float
    sources: tuple[SourceState, ...]
    received: int
    served: int
    dropped: Mapping[str, int]  # every DropReason, zeros included
    kod_sent: Mapping[str, int]  # RATE, DENY, RSTR
    control_requests: int
    auth_failed: Mapping[str, int]  # every refusal kind of proto.auth, zeros included
    mru_entries: int
    nts_served: int = 0
    peer_packets: int = 0  # mode 1/2 packets from configured peers, handed to them
    nts_failed: Mapping[str, int] = field(default_factory=dict)  # every NtsFailure
    control_dropped: Mapping[str, int] = field(default_factory=dict)  # every ControlDrop
    mssntp_signed: int = 0  # MS-SNTP replies signed by Samba's ntp_signd and sent
    mssntp_failed: Mapping[str, int] = field(default_factory=dict)  # every MssntpFailure
    http: Mapping[str, int] = field(default_factory=dict)  # metrics endpoint outcomes
    broadcast_packets: int = 0  # broadcasts the responder handed to the broadcast client
    broadcast: BroadcastCounts = BroadcastCounts()
    # Interleaved mode: replies in it, those with only a user-space transmit timestamp,
    # requests for it answered in basic mode, and replies kept for the next request.
    interleaved: Mapping[str, int] = field(default_factory=dict)
    # The NTS-KE server's connections (daemon.ntsketls.KeCounters), when it runs: accepted,
    # served, refused_* and what ended the others; errors by kind.
    nts_ke: Mapping[str, int] = field(default_factory=dict)
    nts_ke_errors: Mapping[str, int] = field(default_factory=dict)

    @property
    def synchronised(self) -> bool:
        return self.leap != LEAP_UNSYNCHRONISED and self.stratum < 16

    @staticmethod
    def build(snapshot: ControlSnapshot, counters: ServerCounters, *, version: str,
              start_time: float, now: float, control_requests: int = 0,
              mru_entries: int = 0, http: Mapping[str, int] | None = None,
              control_dropped: Mapping[ControlDrop, int] | None = None,
              broadcast: BroadcastCounts | None = None,
              interleaved_kept: int = 0) -> Status:
        reftime = ntp_to_unix(snapshot.reftime, now) if snapshot.reftime else None
        dropped = {reason.value: counters.dropped.get(reason, 0) for reason in DropReason}
        kod = {_text(code): counters.kod_sent.get(code, 0) for code in KISS_CODES}
        auth = {r.value: counters.auth_failed.get(r, 0) for r in AuthResult
                if r not in (AuthResult.OK, AuthResult.NO_MAC)}
        return Status(
            version=version, start_time=start_time, now=now, leap=snapshot.leap,
            stratum=snapshot.stratum,
            refid=refid_text(snapshot.refid, snapshot.stratum, snapshot.refclock),
            precision=snapshot.precision, root_delay=snapshot.rootdelay,
            root_dispersion=snapshot.rootdisp, reference_time=reftime,
            offset=snapshot.offset, frequency=snapshot.frequency,
            jitter=snapshot.sys_jitter,
            sources=tuple(SourceState.from_peer(p) for p in snapshot.peers),
            received=counters.received, served=counters.served, dropped=dropped,
            kod_sent=kod, control_requests=control_requests, mru_entries=mru_entries,
            auth_failed=auth, nts_served=counters.nts_served,
            peer_packets=counters.peer_packets,
            nts_failed={f.value: counters.nts_failed.get(f, 0) for f in NtsFailure},
            control_dropped={r.value: (control_dropped or {}).get(r, 0) for r in ControlDrop},
            mssntp_signed=counters.mssntp_signed,
            mssntp_failed={f.value: counters.mssntp_failed.get(f, 0) for f in MssntpFailure},
            http=dict(http or {}), broadcast_packets=counters.broadcast_packets,
            broadcast=broadcast or BroadcastCounts(),
            interleaved={"served": counters.interleaved,
                         "daemon_stamp": counters.interleaved_daemon_stamp,
                         "missed": counters.interleaved_missed, "kept": interleaved_kept})


# --- Prometheus text ---------------------------------------------------------------------
# Rendered by prometheus_client (escaping, number formats, the 0.0.4 text and OpenMetrics
# encoders) from a custom collector over the Status value: the library keeps up with the
# formats, this module only says what the daemon's state means.

OPENMETRICS_TYPE = openmetrics.CONTENT_TYPE_LATEST

Labels = Mapping[str, str]


def _source_labels(s: SourceState) -> dict[str, str]:
    # address + port is unique per association (daemon.sources keys its peers by it), so
    # four `server 127.0.0.1 port N` lines give four series; the name alone is not unique
    # (a pool's members share it), the association id is (but changes with every start).
    return {"address": s.address, "port": str(s.port), "name": s.name}


def _family(kind: str, name: str, help_text: str,
            samples: Iterable[tuple[Labels, float]]) -> Metric:
    samples = list(samples)
    keys = list(samples[0][0]) if samples else []
    family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(
        name, help_text, labels=keys)
    for labels, value in samples:
        family.add_metric([labels[k] for k in keys], float(value))
    return family


def _one(kind: str, name: str, help_text: str, value: float) -> Metric:
    return _family(kind, name, help_text, [({}, value)])


class StatusCollector(Collector):
    """The daemon's state as metric families, for one scrape (a Status is a snapshot)."""

    def __init__(self, status: Status) -> None:
        self.status = status

    def collect(self) -> Iterable[Metric]:
        st = self.status
        yield _family("gauge", "ntp_build_info", "pyntpd version; always 1",
                      [({"version": st.version}, 1)])
        yield _one("gauge", "process_start_time_seconds",
                   "Start time of the process since the Unix epoch", st.start_time)
        yield from self._system(st)
        yield from self._sources(st.sources)
        yield from self._server(st)

    @staticmethod
    def _system(st: Status) -> Iterable[Metric]:
        yield _one("gauge", "ntp_system_synchronised",
                   "1 when this server is synchronised (leap != 3, stratum < 16)",
                   st.synchronised)
        yield _one("gauge", "ntp_system_leap", "Leap indicator served (0 none, 1 insert, "
                   "2 delete, 3 unsynchronised)", st.leap)
        yield _one("gauge", "ntp_system_stratum", "Stratum served (16: unsynchronised)",
                   st.stratum)
        yield _family("gauge", "ntp_system_refid_info", "Reference id served; always 1",
                      [({"refid": st.refid}, 1)])
        yield _one("gauge", "ntp_system_precision_seconds", "Precision of the system clock",
                   2.0 ** st.precision)
        yield _one("gauge", "ntp_system_root_delay_seconds", "Root delay served",
                   st.root_delay)
        yield _one("gauge", "ntp_system_root_dispersion_seconds", "Root dispersion served",
                   st.root_dispersion)
        if st.reference_time is not None:
            yield _one("gauge", "ntp_system_reference_timestamp_seconds",
                       "Last clock update (reference timestamp) since the Unix epoch",
                       st.reference_time)
        yield _one("gauge", "ntp_system_offset_seconds", "Estimated offset of the local "
                   "clock (true minus local) at the last update", st.offset)
        yield _one("gauge", "ntp_system_frequency_ppm",
                   "Frequency correction of the local clock", st.frequency)
        yield _one("gauge", "ntp_system_jitter_seconds",
                   "System jitter: the combined estimate's standard deviation", st.jitter)

    @staticmethod
    def _sources(sources: tuple[SourceState, ...]) -> Iterable[Metric]:
        def per_source(kind: str, name: str, help_text: str,
                       values: Iterable[tuple[SourceState, float]]) -> Metric:
            return _family(kind, name, help_text,
                           [(_source_labels(s), v) for s, v in values])

        yield per_source("gauge", "ntp_source_reach", "Reach register of the source "
                         "(8 bits, newest poll in the lowest)",
                         ((s, s.reach) for s in sources))
        yield per_source("gauge", "ntp_source_stratum", "Stratum of the source",
                         ((s, s.stratum) for s in sources))
        yield per_source("gauge", "ntp_source_poll_seconds", "Poll interval of the source",
                         ((s, 2.0 ** s.poll) for s in sources))
        yield per_source("gauge", "ntp_source_offset_seconds", "Offset of the source "
                         "(source minus local); NaN before the first sample",
                         ((s, s.offset) for s in sources))
        yield per_source("gauge", "ntp_source_delay_seconds", "Round-trip delay to the source",
                         ((s, s.delay) for s in sources))
        yield per_source("gauge", "ntp_source_jitter_seconds", "Jitter of the source",
                         ((s, s.jitter) for s in sources))
        yield per_source("gauge", "ntp_source_dispersion_seconds", "Dispersion of the source",
                         ((s, s.dispersion) for s in sources))
        associations = [s for s in sources if not s.refclock]
        yield per_source("counter", "ntp_source_received_total",
                         "Datagrams received from the source (each a sample or a drop)",
                         ((s, s.received) for s in associations))
        yield _family("counter", "ntp_source_dropped_total",
                      "Datagrams from the source that gave no sample, by reason",
                      [({**_source_labels(s), "reason": r}, n)
                       for s in associations for r, n in s.dropped.items()])
        yield per_source("counter", "ntp_source_interleaved_samples_total",
                         "Samples from interleaved-mode replies (xleave)",
                         ((s, s.interleaved) for s in associations))
        yield _family("counter", "ntp_source_transmit_stamps_total",
                      "Samples by where their T1 came from: the kernel (SO_TIMESTAMPING), or "
                      "the clock read before send() when the kernel gave none",
                      [({**_source_labels(s), "stamp": k}, n)
                       for s in associations for k, n in s.transmit_stamps.items()])
        refclocks = [s for s in sources if s.refclock]
        if refclocks:
            yield per_source("counter", "ntp_refclock_readings_total",
                             "Readings a reference clock driver took (before ntpd's median "
                             "filter)", ((s, s.received) for s in refclocks))
            yield _family("counter", "ntp_refclock_dropped_total",
                          "Readings a reference clock driver refused, by reason",
                          [({**_source_labels(s), "reason": r}, n)
                           for s in refclocks for r, n in sorted(s.dropped.items())])
        yield _family("gauge", "ntp_source_selected",
                      "1 for the system peer; the tally label is ntpq's condition of the "
                      "source",
                      [({**_source_labels(s), "tally": TALLY_NAMES.get(s.tally, s.tally)},
                        s.selected) for s in sources])

    @staticmethod
    def _server(st: Status) -> Iterable[Metric]:
        yield _one("counter", "ntp_server_packets_received_total",
                   "Datagrams received on the NTP port(s)", st.received)
        yield _one("counter", "ntp_server_packets_served_total", "Time requests answered",
                   st.served)
        yield _family("counter", "ntp_server_packets_dropped_total",
                      "Datagrams dropped without a time reply, by reason",
                      [({"reason": r}, n) for r, n in st.dropped.items()])
        yield _one("counter", "ntp_server_rate_limited_total",
                   "Requests over the rate limit ('limited'); the same as "
                   "ntp_server_packets_dropped_total{reason=\"rate_limited\"}",
                   st.dropped.get(DropReason.RATE_LIMITED.value, 0))
        yield _family("counter", "ntp_server_kod_sent_total",
                      "Kiss-o'-death replies sent, by code",
                      [({"code": c}, n) for c, n in st.kod_sent.items()])
        yield _one("counter", "ntp_server_nts_served_total", "NTS requests answered",
                   st.nts_served)
        yield _one("counter", "ntp_server_peer_packets_total", "Symmetric-mode packets "
                   "from configured peers, handed to their associations", st.peer_packets)
        yield _family("counter", "ntp_server_nts_failed_total",
                      "NTS requests not answered (or answered with an NTS NAK), by why",
                      [({"kind": k}, n) for k, n in st.nts_failed.items()])
        yield _one("counter", "ntp_server_mssntp_signed_total",
                   "MS-SNTP replies signed by Samba's ntp_signd and sent", st.mssntp_signed)
        yield _family("counter", "ntp_server_mssntp_failed_total",
                      "MS-SNTP requests left unanswered, by why",
                      [({"kind": k}, n) for k, n in st.mssntp_failed.items()])
        yield _family("counter", "ntp_server_auth_failed_total",
                      "Signed requests left unanswered because the MAC did not verify, by why",
                      [({"kind": k}, n) for k, n in st.auth_failed.items()])
        yield _one("counter", "ntp_server_control_requests_total",
                   "Mode 6 (ntpq) requests answered", st.control_requests)
        yield _family("counter", "ntp_server_control_dropped_total",
                      "Mode 6 requests left unanswered, by reason",
                      [({"reason": r}, n) for r, n in st.control_dropped.items()])
        b = st.broadcast
        yield _one("counter", "ntp_broadcast_sent_total",
                   "Broadcasts sent ('broadcast' lines)", b.sent)
        yield _family("counter", "ntp_broadcast_not_sent_total", "Broadcasts not sent: "
                      "unsynchronised (ntpd says nothing then), or a send error",
                      [({"reason": "unsynchronised"}, b.unsynchronised),
                       ({"reason": "send_error"}, b.send_errors)])
        yield _one("counter", "ntp_broadcast_received_total",
                   "Broadcasts handed to the broadcast client", st.broadcast_packets)
        yield _family("counter", "ntp_broadcast_heard_total",
                      "What the broadcast client made of them: a sample, or why not",
                      [({"outcome": k}, n)
                       for k, n in sorted({"sample": 0, **b.heard}.items())])
        yield _one("gauge", "ntp_server_mru_entries",
                   "Sources in the MRU list (rate limiting, mrulist)", st.mru_entries)
        yield _family("counter", "ntp_server_interleaved_total",
                      "Interleaved mode: replies in it (served), those of them with only a "
                      "user-space transmit timestamp (daemon_stamp), requests for it "
                      "answered in basic mode (missed)",
                      [({"kind": k}, n) for k, n in st.interleaved.items() if k != "kept"])
        yield _one("gauge", "ntp_server_interleaved_kept",
                   "Replies kept for the next interleaved request",
                   st.interleaved.get("kept", 0))
        if st.nts_ke:
            ke = st.nts_ke
            yield _one("counter", "ntp_nts_ke_connections_total", "NTS-KE connections accepted",
                       ke.get("accepted", 0))
            yield _one("counter", "ntp_nts_ke_served_total",
                       "NTS-KE requests answered with keys and cookies", ke.get("served", 0))
            yield _family("counter", "ntp_nts_ke_refused_total",
                          "NTS-KE connections closed at accept, before TLS, by reason",
                          [({"reason": k.removeprefix("refused_")}, n) for k, n in ke.items()
                           if k.startswith("refused_")])
            yield _family("counter", "ntp_nts_ke_ended_total",
                          "NTS-KE sessions ended without an answer: displaced by a newer "
                          "session, out of time, or an error of that kind",
                          [({"reason": "evicted"}, ke.get("evicted", 0)),
                           ({"reason": "timed_out"}, ke.get("timed_out", 0))]
                          + [({"reason": k}, n) for k, n in sorted(st.nts_ke_errors.items())])
        if st.http:
            yield _family("counter", "ntp_metrics_http_requests_total",
                          "Requests to this metrics endpoint, by outcome",
                          [({"outcome": k}, n) for k, n in sorted(st.http.items())])


def exposition(status: Status) -> str:
    """Prometheus text format 0.0.4."""
    return generate_latest(StatusCollector(status)).decode("utf-8")


def openmetrics_exposition(status: Status) -> str:
    """OpenMetrics 1.0 text (ends with `# EOF`), for a scraper that asks for it."""
    return openmetrics.generate_latest(StatusCollector(status)).decode("utf-8")


def wants_openmetrics(accept: str) -> bool:
    """A scraper that lists OpenMetrics in its Accept header gets it (Prometheus does)."""
    return any(part.split(";", 1)[0].strip() == "application/openmetrics-text"
               for part in accept.split(","))


# --- JSON --------------------------------------------------------------------------------

def _num(value: float) -> float | None:
    """JSON has no NaN: an unknown value is null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def status_document(status: Status) -> dict[str, object]:
    return {
        "version": status.version,
        "time": status.now,
        "start_time": status.start_time,
        "system": {
            "synchronised": status.synchronised, "leap": status.leap,
            "stratum": status.stratum, "refid": status.refid,
            "precision": status.precision, "root_delay": status.root_delay,
            "root_dispersion": status.root_dispersion,
            "reference_time": status.reference_time, "offset": _num(status.offset),
            "frequency": _num(status.frequency), "jitter": _num(status.jitter),
        },
        "sources": [
            {"address": s.address, "port": s.port, "name": s.name, "refid": s.refid,
             "stratum": s.stratum,
             "reach": s.reach, "poll": s.poll, "offset": _num(s.offset),
             "delay": _num(s.delay), "jitter": _num(s.jitter),
             "dispersion": _num(s.dispersion), "tally": s.tally,
             "condition": TALLY_NAMES.get(s.tally, s.tally), "selected": s.selected,
             **({"readings": s.received} if s.refclock else {
                 "received": s.received, "interleaved": s.interleaved,
                 "transmit_stamps": dict(s.transmit_stamps)}),
             "dropped": dict(s.dropped)}
            for s in status.sources
        ],
        "server": {
            "received": status.received, "served": status.served,
            "dropped": dict(status.dropped), "kod_sent": dict(status.kod_sent),
            "auth_failed": dict(status.auth_failed),
            "nts_served": status.nts_served, "nts_failed": dict(status.nts_failed),
            "peer_packets": status.peer_packets,
            "mssntp_signed": status.mssntp_signed,
            "mssntp_failed": dict(status.mssntp_failed),
            "control_requests": status.control_requests,
            "control_dropped": dict(status.control_dropped),
            "mru_entries": status.mru_entries,
            "interleaved": dict(status.interleaved),
        },
        "broadcast": {
            "sent": status.broadcast.sent,
            "not_sent_unsynchronised": status.broadcast.unsynchronised,
            "send_errors": status.broadcast.send_errors,
            "received": status.broadcast_packets,
            "heard": dict(sorted(status.broadcast.heard.items())),
        },
        "metrics_http": dict(sorted(status.http.items())),
        **({"nts_ke": {**status.nts_ke, "errors": dict(sorted(status.nts_ke_errors.items()))}}
           if status.nts_ke else {}),
    }
