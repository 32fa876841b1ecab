"""Upstream servers that vanish, flap and come back (issue 6, item 4), over loopback.

The upstreams are sockets in this test answering with this machine's clock (harness.Upstreams);
"vanish" closes the socket, so pyntpd's polls meet ICMP port unreachable, as when an ntpd
process dies. pyntpd runs --observe with its unreachability horizon shortened (the engine's Tuning,
replaced in the child): a silent source is dropped after ~10 s
instead of ~80 s at poll 8 s, so the whole story plays out in about half a minute.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.faults.harness import Upstreams, no_traceback, poll_until, program, upstreams, wrapper
from tests.support import Pyntpd, query

# A silent source is unreachable after one poll plus 2 s, and the engine re-selects every
# 2 s when no sample comes at all (64 s in production).
FAST_UNREACH = {"unreach_polls": 1, "reach_slack": 2.0, "hold_wakeup": 2.0}


def _serving_all_along(daemon: Pyntpd, until: str, timeout: float) -> list[int]:
    """Query the daemon every 0.2 s until it logs `until`: every query must be answered."""
    strata = []
    deadline = time.monotonic() + timeout
    while until not in daemon.output():
        assert time.monotonic() < deadline, f"never logged {until!r}:\n{daemon.output()}"
        strata.append(query(daemon.port).header.stratum)
        time.sleep(0.2)
    return strata


def _synchronised(upstream: Upstreams) -> str:
    return f"synchronised to 127.0.0.1 port {upstream.port}"


def _followed(output: str, *candidates: Upstreams) -> Upstreams | None:
    return next((u for u in candidates if _synchronised(u) in output), None)


def test_a_vanished_upstream_is_replaced_then_all_vanish_then_they_come_back(
        tmp_path: Path) -> None:
    with upstreams("127.0.0.1", stratum=2) as a, upstreams("127.0.0.1", stratum=5) as b:
        conf = tmp_path / "ntp.conf"
        conf.write_text("".join(
            f"server 127.0.0.1 port {u.port} iburst minpoll 3 maxpoll 3\n" for u in (a, b))
            + "restrict default\n")
        prog = program(tmp_path, tuning=FAST_UNREACH)
        with Pyntpd("-c", str(conf), wrap=wrapper(prog)) as daemon:
            # Which one is followed first depends on whose samples came first.
            followed = poll_until(lambda: _followed(daemon.output(), a, b), 15,
                                  f"synchronised:\n{daemon.output()}")
            assert isinstance(followed, Upstreams)
            other = b if followed is a else a
            assert query(daemon.port).header.stratum == followed.stratum + 1

            for flap in range(6):  # gone and back within a poll: nothing changes
                (followed.vanish if flap % 2 == 0 else followed.come_back)()
                assert query(daemon.port).header.stratum == followed.stratum + 1
                time.sleep(0.3)

            followed.vanish()
            strata = _serving_all_along(daemon, _synchronised(other), 25)
            assert set(strata) <= {followed.stratum + 1, other.stratum + 1}
            assert query(daemon.port).header.stratum == other.stratum + 1

            other.vanish()
            strata = _serving_all_along(daemon, "no selectable source", 25)
            assert set(strata) <= {other.stratum + 1, 16}
            assert query(daemon.port).header.stratum == 16  # still answering, unsynchronised

            a.come_back()
            b.come_back()
            before = daemon.output().count("synchronised to 127.0.0.1")
            poll_until(lambda: daemon.output().count("synchronised to 127.0.0.1") > before,
                       20, f"resynchronised:\n{daemon.output()}")
            assert query(daemon.port).header.stratum in (3, 6)
            assert daemon.stop() == 0
            no_traceback(daemon.output())
