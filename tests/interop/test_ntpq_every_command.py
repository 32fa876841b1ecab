"""Every command of ntpsec's ntpq against pyntpd, in a network namespace (ntpq only talks to
port 123). None may crash ntpq (issue 16: `sysinfo` died with a TypeError on a variable pyntpd
did not give), and each ends as it does against ntpd: answered, or refused as ntpd refuses it
(or as ntpq refuses to send it, such as the authenticated `ifstats` without a key).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable

from refdaemons import ChronyServer, NetNamespace, find_ntpq
from tests.support import Pyntpd, config_file

Require = Callable[..., dict[str, str]]

# ntpq's `help`, less what only changes ntpq itself or reads the terminal (host, keyid,
# passwd, timeout, debug, units, ...: they never reach the daemon).
COMMANDS = (
    "peers", "apeers", "lpeers", "opeers", "lopeers", "rpeers",
    "associations", "lassociations", "passociations", "lpassociations",
    "readvar", "rv", "rv &1", "readlist", "rl", "mreadvar &1 &2", "mrv &1 &2",
    "mreadlist &1 &2", "mrl &1 &2", "clockvar", "cv", "clocklist", "cl",
    "sysinfo", "sysstats", "kerninfo", "monstats", "authinfo", "ntsinfo", "iostats",
    "ifstats", "reslist", "timerstats", "pstats &1",
    "mrulist", "mrulist sort=lstint", "mrulist sort=-avgint", "mrulist sort=addr",
    "mrulist sort=-count limit=5", "mrulist mincount=2 resany=0x40", "mrulist recent=3",
    "writevar 0 leap=1", "writelist 0", ":config restrict default", "config-from-file /dev/null",
    "version",
)
# What ends with an error against ntpd too: no reference clock to show (ntpd's BADASSOC), and
# what ntpq itself refuses to send without a control key (`-a`/`-k`, not given here).
REFUSED: dict[str, list[str]] = {
    "clocklist": ["***Server error code BADASSOC"],
    "cl": ["***Server error code BADASSOC"],
    "ifstats": ["***Invalid key identifier"],
    "reslist": ["***Invalid key identifier"],
    ":config": ["***Invalid key identifier"],
    "config-from-file": ["***No credentials"],
}
ERROR = re.compile(r"^\*\*\*.*$", re.MULTILINE)


def run_all(netns: NetNamespace) -> dict[str, subprocess.CompletedProcess[str]]:
    ntpq = find_ntpq()
    assert ntpq is not None
    out = {}
    for command in COMMANDS:
        # `&N` is the Nth association of the last `associations` in the same session.
        first = ["-c", "associations"] if "&" in command else []
        out[command] = netns.run([ntpq, "-n", *first, "-c", command, "127.0.0.1"], timeout=30)
    return out


def errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    return ERROR.findall(result.stderr + result.stdout)


def test_every_ntpq_command_works_against_pyntpd(require: Require, netns: NetNamespace) -> None:
    require("ntpq", "chronyd")
    conf = ("server 127.0.0.1 port 10123 iburst minpoll 4 maxpoll 4\nrestrict default\n")
    with ChronyServer(stratum=8, port=10123, bind="127.0.0.1", netns=netns), \
            config_file(conf) as path, Pyntpd("-c", path, port=123, wrap=netns.wrap) as d:
        d.wait_synced()
        ours = run_all(netns)
    for command, result in ours.items():
        assert "Traceback" not in result.stderr, f"{command}: {result.stderr}"
        assert result.returncode == 0, f"{command}: {result.stderr}"
        assert errors(result) == REFUSED.get(command.split()[0], []), command
    # What issue 16 found missing: the system peer in sysinfo, ntpd's 8-sample register and
    # the local address in rv ASSOC.
    assert "system peer:       127.0.0.1:10123" in ours["sysinfo"].stdout
    assert "system peer mode:   client" in ours["sysinfo"].stdout
    peer = ours["rv &1"].stdout
    assert "dstadr=127.0.0.1" in peer
    delays = re.search(r"filtdelay =([^,]*),", peer)
    assert delays is not None and len(delays.group(1).split()) == 8
    assert float(delays.group(1).split()[0]) > 0
    assert "packets received:" in ours["pstats &1"].stdout
