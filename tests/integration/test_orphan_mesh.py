"""Orphan mode among real pyntpd daemons: three hosts, each in a network namespace of its own
on one private segment (a bridge in a fourth namespace), each with the Juju charm's lines
(`peer` to the others without keys, polled as servers, and `tos orphan 10`), no upstream.
The lowest address must become orphan parent and the others follow it.

Needs root (network namespaces): skipped otherwise, and fails under CI=true, like the netns
interop tests. Every daemon runs with --observe.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator

from tests.interop import refdaemons
from tests.support import Pyntpd, config_file

ADDRESSES = ("10.99.0.1", "10.99.0.2", "10.99.0.3")
SYNCED = re.compile(r"synchronised to (10\.99\.0\.\d) \(stratum (\d+)\)")
PARENT = "orphan parent: no source left, serving stratum 10 (tos orphan)"


def _pid(ns: refdaemons.NetNamespace) -> str:
    return ns.path.split("/")[2]


@contextlib.contextmanager
def _segment() -> Iterator[list[refdaemons.NetNamespace]]:
    """Three namespaces with one address each, joined by a bridge in a fourth."""
    with contextlib.ExitStack() as stack:
        switch = stack.enter_context(refdaemons.NetNamespace())
        switch.run(["ip", "link", "add", "br0", "type", "bridge"], 5.0, check=True)
        switch.run(["ip", "link", "set", "br0", "up"], 5.0, check=True)
        hosts = []
        for i, address in enumerate(ADDRESSES):
            ns = stack.enter_context(refdaemons.NetNamespace())
            ns.run(["ip", "link", "add", "eth0", "type", "veth", "peer", "name", f"port{i}",
                    "netns", _pid(switch)], 5.0, check=True)
            ns.run(["ip", "addr", "add", f"{address}/24", "dev", "eth0"], 5.0, check=True)
            ns.run(["ip", "link", "set", "eth0", "up"], 5.0, check=True)
            switch.run(["ip", "link", "set", f"port{i}", "master", "br0"], 5.0, check=True)
            switch.run(["ip", "link", "set", f"port{i}", "up"], 5.0, check=True)
            hosts.append(ns)
        yield hosts


def _conf(address: str) -> str:
    peers = "".join(f"peer {other} iburst minpoll 3 maxpoll 3\n"
                    for other in ADDRESSES if other != address)
    return f"tos orphan 10 orphanwait 5\n{peers}restrict default\n"


def _stratum_and_refid(ns: refdaemons.NetNamespace, address: str) -> tuple[int, str]:
    """Ask a daemon from inside a namespace, as a client on the segment would."""
    program = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(2)\n"
        f"s.sendto(bytes([0x23])+bytes(39)+(1).to_bytes(8,'big'),('{address}',123))\n"
        "r=s.recv(512);print(r[1],'.'.join(str(b) for b in r[12:16]))\n")
    result = ns.run([sys.executable, "-c", program], 10.0, check=True)
    stratum, refid = result.stdout.split()
    return int(stratum), refid


def test_three_daemons_without_upstream_elect_the_lowest_address_as_orphan_parent() -> None:
    refdaemons.require("netns")
    with _segment() as hosts, contextlib.ExitStack() as stack:
        daemons = []
        for ns, address in zip(hosts, ADDRESSES, strict=True):
            conf = stack.enter_context(config_file(_conf(address)))
            daemons.append(stack.enter_context(
                Pyntpd("-c", conf, port=123, wrap=ns.wrap)))
        parent, *children = daemons
        for child in children:
            match = child.search_log(SYNCED, 120.0)
            assert match is not None, child.output()
            assert match.groups() == ("10.99.0.1", "11"), child.output()
        assert PARENT in parent.output()
        assert SYNCED.search(parent.output()) is None, parent.output()
        assert _stratum_and_refid(hosts[1], "10.99.0.1") == (10, "127.0.0.1")
        assert _stratum_and_refid(hosts[0], "10.99.0.3") == (11, "10.99.0.1")
        for d in daemons:
            assert "'peer' without 'key': polled as 'server'" in d.output()
            assert "Traceback" not in d.output()
