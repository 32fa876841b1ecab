"""chroot (-i) and -u with NTS and names, for real (issue 12, item 4).

The daemons under test run as `nobody` in an empty jail directory: nothing of the Python
standard library, of /etc or of /lib is visible to them once they are confined (and even
without -i, `nobody` cannot read this interpreter's stdlib under /root). Names come from a
test-owned /etc/hosts bind-mounted in a private mount namespace (tests/faults/test_dns.py);
the NTS server is another pyntpd. An audit hook reports every module imported after the
daemon confined itself: each would fail in a jail, some only on a path run hours later.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pyntpd.daemon.ntsketls import key_exchange
from pyntpd.proto.nts import ReplyCheck
from pyntpd.proto.packet import decode
from tests.faults.harness import no_traceback, program, require_root, wrapper
from tests.ntscerts import Pki, make_pki
from tests.support import Pyntpd, client_request, exchange, query

# Reports each import that happens after Daemon.confine() returned (audit event "import" is
# raised only for modules not yet in sys.modules, whether the import succeeds or not).
LATE_IMPORTS = """\
import os as _os, sys as _sys
_confined = []
def _late_import(event, args):
    if event == "import" and _confined:
        _os.write(2, ("LATE-IMPORT " + str(args[0]) + "\\n").encode())
_sys.addaudithook(_late_import)
from pyntpd.daemon import app as _app
_confine = _app.Daemon.confine
def _confine_and_mark(self):
    _confine(self)
    _confined.append(True)
_app.Daemon.confine = _confine_and_mark
"""
LATE = re.compile(r"LATE-IMPORT (\S+)")
FAST = {"pyntpd.daemon.sources": {"RESOLVE_RETRY_MIN": 0.5, "RESOLVE_RETRY_MAX": 1.0,
                                  "KE_RETRY_MIN": 0.5, "KE_RETRY_MAX": 1.0}}


@pytest.fixture(autouse=True)
def _root() -> None:
    require_root("unshare")


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _readable_dir(tmp_path: Path) -> Path:
    # pytest's tmp_path is 0700: `nobody` could not reach the program and files in it.
    directory = tmp_path / "run"
    directory.mkdir()
    for d in (tmp_path, directory):
        d.chmod(0o755)
    return directory


def _names(d: Path, hosts: str) -> str:
    """Mount commands for the daemon's private namespace: these names, files only."""
    (d / "hosts").write_text(hosts)
    (d / "nsswitch.conf").write_text("hosts: files\n")
    return (f"mount --bind {d / 'nsswitch.conf'} /etc/nsswitch.conf\n"
            f"mount --bind {d / 'hosts'} /etc/hosts")


def _nts_server(d: Path, pki: Pki, ke_port: int) -> Pyntpd:
    """The upstream: pyntpd on its local clock at stratum 1, with NTS-KE, not confined."""
    conf = d / "upstream.conf"
    conf.write_text("server 127.127.1.0\nfudge 127.127.1.0 stratum 1\nrestrict default\n"
                    f"nts enable cert {pki.cert} key {pki.key} cookie {d / 'up-keys'} "
                    f"listen 127.0.0.1 port {ke_port}\n")
    return Pyntpd("-c", str(conf))


def late_imports(output: str) -> list[str]:
    return sorted(set(LATE.findall(output)))


def _nts_query(port: int, ke_port: int, pki: Pki) -> ReplyCheck | None:
    session = asyncio.run(key_exchange("ntp.jail.test", ke_port, str(pki.ca), timeout=5.0,
                                       connect_to="127.0.0.1"))
    request, uid = session.build_request(client_request(transmit=0x0102030405060708))
    reply = exchange(session.port or port, request)
    return None if reply is None else session.check_reply(reply, decode(reply), uid)


def test_a_jailed_daemon_synchronises_over_nts_to_a_name_serves_nts_and_imports_nothing_late(
        tmp_path: Path) -> None:
    d = _readable_dir(tmp_path)
    jail = d / "jail"
    # The cookie key file's directory, as the service user's state directory inside the
    # jail; the same path outside stays empty unless root writes there before the chroot.
    cookie = d / "state" / "keys"
    cookie.parent.mkdir()
    state = jail / cookie.parent.relative_to("/")
    state.mkdir(parents=True)
    nobody = pwd.getpwnam("nobody")
    os.chown(state, nobody.pw_uid, nobody.pw_gid)
    pki = make_pki(d / "pki", names=("ntp.jail.test", "localhost"))
    for path in (pki.directory, pki.ca, pki.cert):
        path.chmod(0o755 if path.is_dir() else 0o644)
    up_ke, own_ke = _free_tcp_port(), _free_tcp_port()
    setup = _names(d, "127.0.0.1 localhost ntp.jail.test pool.jail.test\n")
    with _nts_server(d, pki, up_ke) as upstream:
        conf = d / "ntp.conf"
        conf.write_text(
            f"server ntp.jail.test nts ntsport {up_ke} iburst minpoll 3 maxpoll 3\n"
            f"pool pool.jail.test port {upstream.port} iburst minpoll 3 maxpoll 3\n"
            f"nts ca {pki.ca}\n"
            f"nts enable cert {pki.cert} key {pki.key} cookie {cookie} "
            f"listen 127.0.0.1 port {own_ke}\n"
            "restrict default\nrestrict 127.0.0.1\n"
            f"driftfile {cookie.parent / 'drift'}\nstatsdir {cookie.parent}/\n"
            "statistics loopstats peerstats sysstats\n"
            # reference clocks with nothing behind them: their drivers' paths run too
            "server 127.127.28.3 noselect\nserver 127.127.46.0 noselect\n")
        # After -i every path is looked up inside the jail, as with ntpd: the reload reads
        # the configuration there.
        inside = jail / conf.relative_to("/")
        inside.parent.mkdir(parents=True, exist_ok=True)
        inside.write_text(conf.read_text())
        # A simulated clock: the daemon disciplines it (so keeps CAP_SYS_TIME and writes its
        # drift file), this machine's clock is never touched.
        prog = program(d, running_clock=True, preamble=LATE_IMPORTS, **FAST)
        metrics = _free_tcp_port()
        with Pyntpd("-c", str(conf), "-u", "nobody", "-i", str(jail),
                    "--metrics", f"127.0.0.1:{metrics}", status=True, observe=False,
                    wrap=wrapper(prog, setup)) as daemon:
            daemon.wait_for_log(f"association with 127.0.0.1 port {upstream.port} "
                                "(ntp.jail.test), NTS", 20)
            daemon.wait_for_log(f"association with 127.0.0.1 port {upstream.port} "
                                "(pool.jail.test)", 20)
            daemon.wait_for_log("synchronised to 127.0.0.1", 40)
            assert query(daemon.port).header.stratum == 3
            assert _nts_query(daemon.port, own_ke, pki) is ReplyCheck.OK
            assert daemon.status()["system"]["stratum"] == 3
            _scrape(metrics)
            _mode6(daemon.port)
            daemon.signal(signal.SIGHUP)
            daemon.wait_for_log("configuration reloaded", 10)
            assert daemon.stop() == 0
            output = daemon.output()
    assert late_imports(output) == []
    no_traceback(output)
    keys = (state / "keys").stat()  # written by nobody in the jail, none by root outside
    assert (keys.st_uid, stat.S_IMODE(keys.st_mode)) == (nobody.pw_uid, 0o600)
    written = {p.name.split(".")[0] for p in state.iterdir()}
    assert written == {"keys", "drift", "loopstats", "peerstats", "sysstats"}, written
    assert list(cookie.parent.iterdir()) == []


def _scrape(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b"".join(iter(lambda: s.recv(65536), b""))
    assert data.startswith(b"HTTP/1.1 200"), data[:200]


def _mode6(port: int) -> None:
    for command in (["-c", "rv"], ["-pn"], ["-c", "mrulist"]):
        result = subprocess.run([sys.executable, "-m", "pyntpd.cli.pyntpq", "--port", str(port),
                                 *command, "127.0.0.1"], capture_output=True, text=True,
                                timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_embedded_default_synchronises_from_inside_a_jail(tmp_path: Path) -> None:
    """`pyntpd --builtin-config -u nobody -i JAIL`: the pool's name is looked up, its
    server polled, the daemon synchronises. In a network namespace of the test's own, where
    pool.ntp.org is 127.0.0.1 and another pyntpd serves there on port 123."""
    from tests.interop.refdaemons import NetNamespace

    d = _readable_dir(tmp_path)
    jail = d / "jail"
    jail.mkdir()
    setup = _names(d, "127.0.0.1 localhost pool.ntp.org\n")
    upstream = d / "upstream.conf"
    upstream.write_text("server 127.127.1.0\nfudge 127.127.1.0 stratum 1 refid GPS\n"
                        "restrict default\n")
    prog = program(d, preamble=LATE_IMPORTS, **FAST)
    with NetNamespace() as netns, \
            Pyntpd("-c", str(upstream), port=123, wrap=netns.wrap), \
            Pyntpd("--builtin-config", "-u", "nobody", "-i", str(jail),
                   wrap=wrapper(prog, setup, prefix=tuple(netns.wrap([])))) as daemon:
        daemon.wait_for_log("association with 127.0.0.1 (pool.ntp.org)", 20)
        daemon.wait_for_log("synchronised to 127.0.0.1 (pool.ntp.org) (stratum 3)", 40)
        assert daemon.stop() == 0
        output = daemon.output()
    assert late_imports(output) == []
    no_traceback(output)
