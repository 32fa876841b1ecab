"""Orphan mode among several pyntpd instances: a Juju-style mesh (`peer` lines without keys,
polled as servers, and `tos orphan 10`) whose upstream goes away.

Three nodes, each the real stack: its own `SimClock` (its own frequency error), a
`SyncEngine` driven by the one `Driver`, `Association`s to the upstream and to the other two
nodes, and a `Responder` serving what its engine states — so a node answers its neighbours
exactly as a daemon would. One event queue on true time carries every packet.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Hashable

from pyntpd.clock.simclock import SimClock
from pyntpd.config.model import TosConfig
from pyntpd.driver import Driver
from pyntpd.proto.access import Access, RestrictTable
from pyntpd.proto.server import Responder
from pyntpd.proto.source import Association, SourceSpec
from pyntpd.proto.timestamp import ntp_add, unix_ns_to_ntp
from pyntpd.sim.network import Path, SimServer
from pyntpd.sync.engine import ORPHAN_REFID, SyncConfig, SyncEngine, SyncResult

ONE_WAY = 0.0005  # s each way between any two nodes
POLL = 4  # 16 s polls keep the run short
ORPHAN = 10
UPSTREAM = "192.0.2.1"


class _Timer:
    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback: Callable[[], None] | None = callback

    def fire(self) -> None:
        if self.callback is not None:
            callback, self.callback = self.callback, None
            callback()

    def cancel(self) -> None:
        self.callback = None


class Mesh:
    def __init__(self, upstream_outage: tuple[float, float]) -> None:
        self.t = 0.0
        self.events: list[tuple[float, int, Callable[[], None]]] = []
        self.seq = itertools.count()
        self.upstream = SimServer(UPSTREAM, Path(forward=ONE_WAY, backward=ONE_WAY,
                                                 outages=[upstream_outage]))
        self.nodes: dict[str, Node] = {}

    def at(self, true: float, action: Callable[[], None]) -> None:
        heapq.heappush(self.events, (true, next(self.seq), action))

    def add(self, address: str, frequency_ppm: float, offset: float) -> Node:
        node = Node(self, address, SimClock(offset=offset, frequency_ppm=frequency_ppm))
        self.nodes[address] = node
        return node

    def start(self) -> None:
        for node in self.nodes.values():
            node.start([UPSTREAM, *(a for a in self.nodes if a != node.address)])

    def run(self, until: float) -> None:
        while self.events and self.events[0][0] <= until:
            true, _, action = heapq.heappop(self.events)
            self.t = true
            for node in self.nodes.values():
                node.clock.advance_to(true)
            action()


class Node:
    def __init__(self, mesh: Mesh, address: str, clock: SimClock) -> None:
        self.mesh = mesh
        self.address = address
        self.clock = clock
        self.responder = Responder(Access(RestrictTable()))
        self.engine = SyncEngine(SyncConfig(tos=TosConfig(orphan=ORPHAN, orphanwait=300)),
                                 self.local())
        self.driver = Driver(self.engine, clock, self, on_result=self._published)
        self.assocs: dict[Hashable, Association] = {}
        self.history: list[tuple[float, SyncResult]] = []
        transmit = itertools.count(int(address.split(".")[-1]) << 40 | 1)
        self._transmit = lambda: next(transmit)

    def local(self) -> float:
        return self.clock.now() / 1e9

    def call_at(self, local: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(callback)
        self.mesh.at(max(self.mesh.t, self.clock.true_at_local(local)) + 1e-6, timer.fire)
        return timer

    def _published(self, result: SyncResult, now: float) -> None:
        self.responder.set_system(result.system)
        self.history.append((self.mesh.t, result))

    def start(self, targets: list[str]) -> None:
        self.driver.update()
        for target in targets:
            assoc = Association(SourceSpec(target, minpoll=POLL, maxpoll=POLL),
                                random_transmit=self._transmit)
            self.assocs[target] = assoc
            # What the daemon passes: the address this node reaches the target from.
            self.driver.add_source(target, assoc, target, local_address=self.address)
            assoc.start(self.local())
            self._schedule(target)

    def _schedule(self, target: str) -> None:
        self.call_at(self.assocs[target].next_timer(), lambda: self._poll(target))

    def _poll(self, target: str) -> None:
        assoc = self.assocs[target]
        if assoc.on_timer(self.local()):
            request = assoc.make_request(self.local())
            if request is not None:
                assoc.sent(unix_ns_to_ntp(self.clock.now()))
                self.mesh.at(self.mesh.t + ONE_WAY, lambda: self._serve(target, request))
        self._schedule(target)

    def _serve(self, target: str, request: bytes) -> None:
        if target == UPSTREAM:
            answer = self.mesh.upstream.answer(request, self.mesh.t)
            if answer is None or self.mesh.upstream.path.down(self.mesh.t):
                return
            reply, leaves = answer
        else:
            server = self.mesh.nodes[target]
            receive = unix_ns_to_ntp(server.clock.now())
            head = server.responder.respond(request, int.from_bytes(bytes(
                int(x) for x in self.address.split("."))), False, 123, receive, server.local())
            if head is None:
                return
            reply = head + ntp_add(receive, 5e-6).to_bytes(8, "big")
            leaves = self.mesh.t + 5e-6
        self.mesh.at(leaves + ONE_WAY, lambda: self._receive(target, reply))

    def _receive(self, target: str, reply: bytes) -> None:
        t4 = self.clock.now()
        sample = self.assocs[target].receive(reply, unix_ns_to_ntp(t4), t4 / 1e9)
        if sample is not None:
            self.driver.on_sample(target, sample)

    def state(self) -> tuple[int, bytes, Hashable | None]:
        result = self.driver.last
        assert result is not None
        return result.system.stratum, result.system.refid, result.system_peer


def _mesh(outage: tuple[float, float]) -> Mesh:
    mesh = Mesh(outage)
    # Different oscillators and starting offsets: the parent's clock must win.
    mesh.add("10.0.0.3", frequency_ppm=12.0, offset=0.002)
    mesh.add("10.0.0.1", frequency_ppm=-8.0, offset=-0.003)
    mesh.add("10.0.0.2", frequency_ppm=25.0, offset=0.001)
    mesh.start()
    return mesh


def test_mesh_follows_the_upstream_while_it_answers():
    mesh = _mesh((10_000.0, 20_000.0))
    mesh.run(1_500.0)
    for node in mesh.nodes.values():
        assert node.state() == (2, bytes([192, 0, 2, 1]), UPSTREAM)


def test_without_upstream_the_lowest_address_becomes_orphan_parent_and_the_others_follow():
    mesh = _mesh((1_000.0, 1e9))
    mesh.run(5_000.0)
    parent, *children = (mesh.nodes[a] for a in ("10.0.0.1", "10.0.0.2", "10.0.0.3"))
    assert parent.state() == (ORPHAN, ORPHAN_REFID, None)
    assert parent.driver.last is not None and parent.driver.last.system.synchronised
    for child in children:
        assert child.state() == (ORPHAN + 1, bytes([10, 0, 0, 1]), "10.0.0.1")
        # The children's clocks follow the parent's.
        assert abs(child.clock.phase - parent.clock.phase) < 0.001


def test_orphan_mesh_never_climbs_strata_in_a_loop():
    """Without ntpd's rules each orphan would select the others and the strata would climb
    through a timing loop to 16."""
    mesh = _mesh((1_000.0, 1e9))
    mesh.run(5_000.0)
    for node in mesh.nodes.values():
        late = [r.system.stratum for t, r in node.history if t > 2_500.0]
        assert late and set(late) <= {ORPHAN, ORPHAN + 1}, (node.address, sorted(set(late)))


def test_mesh_returns_to_the_upstream_when_it_comes_back():
    mesh = _mesh((1_000.0, 4_000.0))
    mesh.run(3_500.0)
    assert mesh.nodes["10.0.0.1"].state()[0] == ORPHAN
    mesh.run(6_000.0)
    for node in mesh.nodes.values():
        assert node.state() == (2, bytes([192, 0, 2, 1]), UPSTREAM)
