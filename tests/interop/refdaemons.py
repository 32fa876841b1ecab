"""Run reference NTP daemons (chrony, ntpsec, Samba) and their tools safely from tests.

Safety rules enforced here, not left to callers:

* chronyd always runs with ``-x`` (never touches the system clock), in the foreground (``-d``),
  with every file (config, pidfile, driftfile, command socket) in a private temporary directory,
  and with the UDP command port disabled (``cmdport 0``): chronyc talks to it over a Unix socket.
* ntpsec's ntpd is only ever started through :func:`ntpsec_ntpd_argv`, which drops CAP_SYS_TIME
  with ``setpriv`` so its unconditional ``ntp_adjtime`` calls fail with EPERM.
* Every process is stopped on exit: SIGTERM, then SIGKILL after a bounded wait.
* Every wait is a bounded poll against a monotonic deadline.
* Traffic goes to loopback only; tools that only speak to UDP port 123 (ntpdig, ntpq) are run in a
  private network namespace (:class:`NetNamespace`) together with the daemon they query.

Gotchas found on Debian bookworm (chrony 4.3, ntpsec 1.2.2):

* chrony is only unpacked (it conflicts with ntpsec), so the ``_chrony`` user does not exist and
  chronyd exits with "Could not get user/group ID of _chrony" unless started with ``-u root``.
* ntpsec's ntpdig has no port option (``-p`` is the sample count) and ntpq always uses port 123.
* Path-named Unix sockets live in the mount namespace, so chronyc reaches a chronyd that runs in
  another network namespace through its command socket.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self, TypeVar

REPO_ROOT = Path(__file__).resolve().parents[2]
INTEROP_DIR = REPO_ROOT / ".interop"
CHRONY_ROOT = INTEROP_DIR / "chrony"
INSTALL_HINT = "run `sudo scripts/install-test-deps` to install the reference daemons"

NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01

T = TypeVar("T")


class RefDaemonError(RuntimeError):
    """A reference daemon or tool could not be started or gave an unusable answer."""


# ------------------------------------------------------------------------------------------------
# Locating binaries
# ------------------------------------------------------------------------------------------------


def _find(name: str, preferred: Sequence[Path] = (), system_dirs: Sequence[str] = ()) -> str | None:
    for path in preferred:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which(name)
    if found:
        return found
    for d in system_dirs:
        candidate = Path(d) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def find_chronyd() -> str | None:
    """chronyd from the repo's .interop/chrony (see scripts/install-test-deps), else PATH."""
    return _find("chronyd", [CHRONY_ROOT / "usr/sbin/chronyd"], ["/usr/sbin", "/sbin"])


def find_chronyc() -> str | None:
    return _find("chronyc", [CHRONY_ROOT / "usr/bin/chronyc"], ["/usr/bin"])


def find_ntpdig() -> str | None:
    return _find("ntpdig", (), ["/usr/bin"])


def find_ntpq() -> str | None:
    """ntpsec's ntpq (Debian package ntpsec)."""
    return _find("ntpq", (), ["/usr/bin"])


def find_ntpsec_ntpd() -> str | None:
    """ntpsec's ntpd, only if the binary on this machine really is ntpsec's."""
    path = _find("ntpd", (), ["/usr/sbin", "/sbin"])
    if path is None:
        return None
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return path if "ntpsec" in (out.stdout + out.stderr) else None


def find_setpriv() -> str | None:
    return _find("setpriv", (), ["/usr/bin", "/bin"])


def find_unshare() -> str | None:
    return _find("unshare", (), ["/usr/bin", "/bin"])


def find_nsenter() -> str | None:
    return _find("nsenter", (), ["/usr/bin", "/bin"])


def find_samba() -> str | None:
    """Samba's AD DC daemon (Debian packages samba, samba-ad-dc, samba-ad-provision)."""
    return _find("samba", (), ["/usr/sbin", "/sbin"])


def find_samba_tool() -> str | None:
    return _find("samba-tool", (), ["/usr/bin"])


TOOL_FINDERS: dict[str, Callable[[], str | None]] = {
    "chronyd": find_chronyd,
    "chronyc": find_chronyc,
    "ntpdig": find_ntpdig,
    "ntpq": find_ntpq,
    "ntpsec-ntpd": find_ntpsec_ntpd,
    "setpriv": find_setpriv,
    "unshare": find_unshare,
    "nsenter": find_nsenter,
    "samba": find_samba,
    "samba-tool": find_samba_tool,
    # Debian's gpsd and gpsd-clients (scripts/install-test-deps)
    "gpsd": lambda: shutil.which("gpsd"),
    "gpsfake": lambda: shutil.which("gpsfake"),
    "gpspipe": lambda: shutil.which("gpspipe"),
    # Debian's ntpstat (a mode 6 READVAR client that monitoring checks call)
    "ntpstat": lambda: shutil.which("ntpstat"),
}


def find_tool(name: str) -> str | None:
    try:
        return TOOL_FINDERS[name]()
    except KeyError:
        raise ValueError(f"unknown tool {name!r}; known: {sorted(TOOL_FINDERS)}") from None


def netns_available() -> bool:
    """True if this process may create network namespaces (root, unshare + nsenter present)."""
    return os.geteuid() == 0 and find_unshare() is not None and find_nsenter() is not None


# ------------------------------------------------------------------------------------------------
# Small utilities
# ------------------------------------------------------------------------------------------------


def poll_until(
    check: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.02,
) -> T:
    """Call ``check`` until it returns something other than None/False; bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None and result is not False:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(min(interval, remaining))


def free_tcp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A currently unused UDP port on ``host`` (ephemeral range, chosen by the kernel)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _check_loopback(host: str) -> None:
    if host in ("::1", "localhost"):
        return
    try:
        first = int(host.split(".")[0])
    except ValueError:
        first = -1
    if first != 127:
        raise ValueError(f"refusing to send NTP traffic to non-loopback address {host!r}")


@dataclass(frozen=True)
class SntpReply:
    leap: int
    version: int
    mode: int
    stratum: int
    poll: int
    precision: int
    root_delay: float
    root_dispersion: float
    refid: bytes
    reference: float  # POSIX seconds (0.0 if the field is zero)
    originate: float
    receive: float
    transmit: float
    destination: float  # POSIX seconds, local clock at reception (user space)


def _ntp64_to_posix(raw: int) -> float:
    if raw == 0:
        return 0.0
    return (raw >> 32) - NTP_EPOCH_OFFSET + (raw & 0xFFFFFFFF) / 2**32


def sntp_query(host: str, port: int, timeout: float = 1.0, version: int = 4) -> SntpReply:
    """One NTP mode-3 request from this process (no external tool); raises on timeout/mismatch."""
    _check_loopback(host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        now = time.time()
        xmt = (int(now) + NTP_EPOCH_OFFSET) << 32 | int((now % 1) * 2**32)
        xmt |= 1  # never zero
        req = bytes([(version << 3) | 3]) + bytes(39) + struct.pack("!Q", xmt)
        s.sendto(req, (host, port))
        deadline = time.monotonic() + timeout
        while True:
            s.settimeout(max(0.001, deadline - time.monotonic()))
            data, _ = s.recvfrom(2048)
            dst = time.time()
            if len(data) < 48:
                continue
            fields = struct.unpack("!BBbbII4sQQQQ", data[:48])
            if fields[8] != xmt:  # originate must echo our transmit
                if time.monotonic() >= deadline:
                    raise TimeoutError("no matching reply")
                continue
            li_vn_mode = fields[0]
            return SntpReply(
                leap=li_vn_mode >> 6,
                version=(li_vn_mode >> 3) & 7,
                mode=li_vn_mode & 7,
                stratum=fields[1],
                poll=fields[2],
                precision=fields[3],
                root_delay=fields[4] / 65536,
                root_dispersion=fields[5] / 65536,
                refid=fields[6],
                reference=_ntp64_to_posix(fields[7]),
                originate=_ntp64_to_posix(fields[8]),
                receive=_ntp64_to_posix(fields[9]),
                transmit=_ntp64_to_posix(fields[10]),
                destination=dst,
            )


# ------------------------------------------------------------------------------------------------
# Processes
# ------------------------------------------------------------------------------------------------


def stop_process(proc: subprocess.Popen[bytes], term_timeout: float = 5.0) -> int:
    """SIGTERM, wait up to ``term_timeout``, then SIGKILL and wait. Returns the exit status."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=term_timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=10)
    rc = proc.returncode
    assert rc is not None
    return rc


class ManagedProcess:
    """A background process whose stdout+stderr go to a log file; always stopped on exit."""

    def __init__(self, argv: Sequence[str], log_path: Path, cwd: Path | None = None) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self._log: IO[bytes] | None = open(log_path, "wb")  # noqa: SIM115 (closed in stop())
        try:
            self.proc: subprocess.Popen[bytes] = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,
            )
        except BaseException:
            self._log.close()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, term_timeout: float = 5.0) -> int:
        try:
            return stop_process(self.proc, term_timeout)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# ------------------------------------------------------------------------------------------------
# Network namespace
# ------------------------------------------------------------------------------------------------


class NetNamespace:
    """A private network namespace with only ``lo`` (up), for tools that insist on port 123.

    A holder process (``unshare -n cat`` reading a pipe from us) keeps the namespace alive; it exits
    when we close the pipe, or when this Python process dies, so no namespace is ever leaked.
    Commands enter it with ``nsenter --net=/proc/HOLDER/ns/net``; ``nsenter`` execs the command,
    so the Popen pid is the command's own pid.  Needs root (CAP_SYS_ADMIN).
    """

    def __init__(self) -> None:
        self._holder: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        unshare, nsenter = find_unshare(), find_nsenter()
        if unshare is None or nsenter is None:
            raise RefDaemonError("unshare/nsenter (util-linux) not found; " + INSTALL_HINT)
        self._nsenter = nsenter
        self._holder = subprocess.Popen(
            [unshare, "--net", "--", "cat"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        holder = self._holder
        own_ns = os.readlink("/proc/self/ns/net")

        def entered() -> bool:
            if holder.poll() is not None:
                err = holder.stderr.read().decode(errors="replace") if holder.stderr else ""
                raise RefDaemonError(f"unshare --net failed: {err.strip()}")
            try:
                return os.readlink(f"/proc/{holder.pid}/ns/net") != own_ns
            except OSError:
                return False

        try:
            poll_until(entered, 5.0, "unshare --net to create the namespace")
            self.run(["ip", "link", "set", "lo", "up"], timeout=5.0, check=True)
        except BaseException:
            self._close()
            raise
        return self

    @property
    def path(self) -> str:
        assert self._holder is not None, "namespace not entered"
        return f"/proc/{self._holder.pid}/ns/net"

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed so that it runs inside this namespace."""
        return [self._nsenter, f"--net={self.path}", "--", *argv]

    def run(
        self, argv: Sequence[str], timeout: float, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.wrap(argv), capture_output=True, text=True, timeout=timeout, check=check
        )

    def popen(self, argv: Sequence[str], log_path: Path) -> ManagedProcess:
        return ManagedProcess(self.wrap(argv), log_path)

    def _close(self) -> None:
        holder, self._holder = self._holder, None
        if holder is None:
            return
        if holder.stdin is not None:
            with contextlib.suppress(OSError):
                holder.stdin.close()
        try:
            holder.wait(timeout=5)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait(timeout=5)
        if holder.stderr is not None:
            holder.stderr.close()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close()


# ------------------------------------------------------------------------------------------------
# chrony
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChronySource:
    """One row of ``chronyc -c sources``."""

    mode: str  # '^' server, '=' peer, '#' refclock
    state: str  # '*' synced, '+' combined, '-' not combined, '?' unreachable, 'x', '~'
    name: str
    stratum: int
    poll: int
    reach: int  # the 8-bit register (printed in octal by chronyc)
    last_rx: int  # seconds since the last good sample (huge/-1 if never)
    offset: float  # adjusted offset of the last sample, seconds
    measured_offset: float
    error: float  # estimated error bound, seconds

    @property
    def reachable(self) -> bool:
        return self.reach != 0


@dataclass(frozen=True)
class ChronyTracking:
    """``chronyc -c tracking``."""

    ref_id: str  # hex, e.g. '7F000001'
    ref_name: str
    stratum: int
    ref_time: float
    system_time: float
    last_offset: float
    rms_offset: float
    frequency_ppm: float
    residual_freq_ppm: float
    skew_ppm: float
    root_delay: float
    root_dispersion: float
    update_interval: float
    leap_status: str


def parse_chronyc_sources(csv_text: str) -> list[ChronySource]:
    rows: list[ChronySource] = []
    for line in csv_text.splitlines():
        if not line.strip():
            continue
        f = line.split(",")
        if len(f) < 10:
            raise RefDaemonError(f"unexpected chronyc sources line: {line!r}")
        rows.append(
            ChronySource(
                mode=f[0],
                state=f[1],
                name=f[2],
                stratum=int(f[3]),
                poll=int(f[4]),
                reach=int(f[5], 8),
                last_rx=int(f[6]) if f[6].lstrip("-").isdigit() else -1,
                offset=float(f[7]),
                measured_offset=float(f[8]),
                error=float(f[9]),
            )
        )
    return rows


def parse_chronyc_tracking(csv_text: str) -> ChronyTracking:
    line = csv_text.strip().splitlines()[0] if csv_text.strip() else ""
    f = line.split(",")
    if len(f) < 14:
        raise RefDaemonError(f"unexpected chronyc tracking output: {csv_text!r}")
    return ChronyTracking(
        ref_id=f[0],
        ref_name=f[1],
        stratum=int(f[2]),
        ref_time=float(f[3]),
        system_time=float(f[4]),
        last_offset=float(f[5]),
        rms_offset=float(f[6]),
        frequency_ppm=float(f[7]),
        residual_freq_ppm=float(f[8]),
        skew_ppm=float(f[9]),
        root_delay=float(f[10]),
        root_dispersion=float(f[11]),
        update_interval=float(f[12]),
        leap_status=f[13],
    )


class Chronyd:
    """A chronyd in the foreground with ``-x``; base of :class:`ChronyServer` / ChronyClient.

    ``port`` is the NTP server port (0 = do not serve).  ``lines`` are extra chrony.conf lines.
    ``netns`` runs the daemon inside a :class:`NetNamespace` (chronyc still works: Unix socket).
    """

    def __init__(
        self,
        *,
        port: int = 0,
        bind: str = "127.0.0.1",
        allow: Sequence[str] = ("127.0.0.1",),
        lines: Sequence[str] = (),
        netns: NetNamespace | None = None,
        workdir: Path | None = None,
        ready_timeout: float = 10.0,
        name: str = "chronyd",
    ) -> None:
        chronyd, chronyc = find_chronyd(), find_chronyc()
        if chronyd is None or chronyc is None:
            raise RefDaemonError("chronyd/chronyc not found; " + INSTALL_HINT)
        self.chronyd, self.chronyc_path = chronyd, chronyc
        self.port = port
        self.bind = bind
        self.allow = tuple(allow)
        self.lines = tuple(lines)
        self.netns = netns
        self.ready_timeout = ready_timeout
        self.name = name
        self._own_workdir = workdir is None
        self._workdir_arg = workdir
        self.workdir = Path("/nonexistent")
        self.process: ManagedProcess | None = None
        self.last_log = ""
        self.last_returncode: int | None = None

    # config ------------------------------------------------------------------------------------

    @property
    def sock(self) -> Path:
        return self.workdir / f"{self.name}.sock"

    @property
    def conf_path(self) -> Path:
        return self.workdir / f"{self.name}.conf"

    def config_lines(self) -> list[str]:
        out = [
            f"pidfile {self.workdir / (self.name + '.pid')}",
            f"driftfile {self.workdir / (self.name + '.drift')}",
            "cmdport 0",
            f"bindcmdaddress {self.sock}",
            f"port {self.port}",
        ]
        if self.port:
            out.append(f"bindaddress {self.bind}")
            out += [f"allow {a}" for a in self.allow]
        out += list(self.lines)
        return out

    # lifecycle ---------------------------------------------------------------------------------

    def start(self) -> Self:
        if self._own_workdir:
            # short path: Unix socket paths are limited to 107 bytes
            self.workdir = Path(tempfile.mkdtemp(prefix="chrony-"))
        else:
            assert self._workdir_arg is not None
            self.workdir = self._workdir_arg
            self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o700)
        self.conf_path.write_text("\n".join(self.config_lines()) + "\n")
        argv = [self.chronyd, "-x", "-d", "-u", "root", "-f", str(self.conf_path)]
        log = self.workdir / f"{self.name}.log"
        try:
            if self.netns is not None:
                self.process = self.netns.popen(argv, log)
            else:
                self.process = ManagedProcess(argv, log)
            poll_until(self._ready, self.ready_timeout, f"{self.name} to answer chronyc")
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if not self.process.alive():
            raise RefDaemonError(
                f"{self.name} exited with {self.process.proc.returncode}:\n"
                + self.process.log_text()
            )
        if not self.sock.exists():
            return False
        r = self._chronyc_raw(["tracking"], timeout=2.0)
        if r.returncode != 0:
            return False
        if self.port and self.netns is None:
            try:
                sntp_query(self.bind, self.port, timeout=0.2)
            except OSError:
                return False
        return True

    def stop(self) -> None:
        proc, self.process = self.process, None
        try:
            if proc is not None:
                rc = proc.stop()
                self.last_log = proc.log_text()
                self.last_returncode = rc
        finally:
            if self._own_workdir and self.workdir.name.startswith("chrony-"):
                shutil.rmtree(self.workdir, ignore_errors=True)

    def log_text(self) -> str:
        return self.process.log_text() if self.process is not None else ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # chronyc -----------------------------------------------------------------------------------

    def _chronyc_raw(self, args: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
        argv = [self.chronyc_path, "-h", str(self.sock), "-n", "-c", *args]
        try:
            return subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as e:
            return subprocess.CompletedProcess(argv, -1, "", f"timeout: {e}")

    def chronyc(self, *args: str, timeout: float = 5.0) -> str:
        """Run ``chronyc -c ARGS`` (CSV output) against this daemon's socket; stdout."""
        r = self._chronyc_raw(args, timeout)
        if r.returncode != 0:
            raise RefDaemonError(f"chronyc {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r.stdout

    def sources(self) -> list[ChronySource]:
        return parse_chronyc_sources(self.chronyc("sources"))

    def tracking(self) -> ChronyTracking:
        return parse_chronyc_tracking(self.chronyc("tracking"))


class ChronyServer(Chronyd):
    """chronyd serving its own free-running clock: ``local stratum N`` on ``bind:port``.

    With ``port=None`` a free UDP port is picked (123 inside a NetNamespace).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        stratum: int = 8,
        bind: str = "127.0.0.1",
        allow: Sequence[str] = ("127.0.0.1",),
        lines: Sequence[str] = (),
        netns: NetNamespace | None = None,
        workdir: Path | None = None,
        ready_timeout: float = 10.0,
        name: str = "server",
    ) -> None:
        if port is None:
            port = 123 if netns is not None else free_udp_port(bind)
        self.stratum = stratum
        super().__init__(
            port=port,
            bind=bind,
            allow=allow,
            lines=(f"local stratum {stratum}", *lines),
            netns=netns,
            workdir=workdir,
            ready_timeout=ready_timeout,
            name=name,
        )


class ChronyClient(Chronyd):
    """chronyd synchronising (``-x``: in its own bookkeeping only) to one or more servers.

    ``servers`` are (host, port) pairs, polled with ``iburst minpoll M maxpoll M``
    (chrony 4.3 accepts intervals down to -6, i.e. 1/64 s).  ``port`` = 0: does not serve.
    """

    def __init__(
        self,
        servers: Sequence[tuple[str, int]],
        *,
        minpoll: int = -4,
        maxpoll: int = -4,
        server_options: str = "",
        port: int = 0,
        bind: str = "127.0.0.1",
        allow: Sequence[str] = ("127.0.0.1",),
        lines: Sequence[str] = (),
        netns: NetNamespace | None = None,
        workdir: Path | None = None,
        ready_timeout: float = 10.0,
        name: str = "client",
    ) -> None:
        for host, _ in servers:
            _check_loopback(host)
        opts = f"iburst minpoll {minpoll} maxpoll {maxpoll} {server_options}".rstrip()
        server_lines = [f"server {h} port {p} {opts}" for h, p in servers]
        super().__init__(
            port=port,
            bind=bind,
            allow=allow,
            lines=(*server_lines, *lines),
            netns=netns,
            workdir=workdir,
            ready_timeout=ready_timeout,
            name=name,
        )

    def wait_synced(self, timeout: float = 10.0) -> ChronySource:
        """Poll ``sources`` until one is selected ('*'); returns it."""

        def selected() -> ChronySource | None:
            for s in self.sources():
                if s.state == "*":
                    return s
            return None

        return poll_until(selected, timeout, f"{self.name} to select a source", interval=0.05)

    def wait_reachable(self, timeout: float = 10.0) -> ChronySource:
        def reachable() -> ChronySource | None:
            for s in self.sources():
                if s.reachable:
                    return s
            return None

        return poll_until(reachable, timeout, f"{self.name} to reach a source", interval=0.05)


# ------------------------------------------------------------------------------------------------
# ntpsec
# ------------------------------------------------------------------------------------------------


def ntpq_query(netns: NetNamespace, *args: str, timeout: float = 20.0) -> str:
    """ntpsec's ``ntpq ARGS 127.0.0.1`` inside ``netns`` (ntpq only talks to port 123);
    its stdout, asserting success."""
    ntpq = find_ntpq()
    assert ntpq is not None, "ntpq not found; " + INSTALL_HINT
    result = netns.run([ntpq, *args, "127.0.0.1"], timeout=timeout)
    assert result.returncode == 0, result.stderr
    return result.stdout


def ntpsec_ntpd_argv(conf: Path, pidfile: Path, extra: Sequence[str] = ()) -> list[str]:
    """argv for ntpsec's ntpd in the foreground with CAP_SYS_TIME dropped (it cannot touch the
    clock: its ``ntp_adjtime`` calls fail with EPERM).  ntpsec listens on port 123 only, so run
    it inside a :class:`NetNamespace`."""
    ntpd, setpriv = find_ntpsec_ntpd(), find_setpriv()
    if ntpd is None or setpriv is None:
        raise RefDaemonError("ntpsec ntpd / setpriv not found; " + INSTALL_HINT)
    return [
        setpriv,
        "--inh-caps=-sys_time",
        "--bounding-set=-sys_time",
        ntpd,
        "-n",
        "-c",
        str(conf),
        "-p",
        str(pidfile),
        *extra,
    ]


@dataclass(frozen=True)
class NtpdigResult:
    host: str
    ip: str
    stratum: int
    offset: float
    precision: float
    leap: str
    time: str
    raw: dict[str, object]


def ntpdig_query(
    host: str = "127.0.0.1",
    port: int = 123,
    timeout: float = 2.0,
    netns: NetNamespace | None = None,
) -> NtpdigResult:
    """Query ``host`` with ntpsec's ntpdig (JSON output) and return the parsed answer.

    ntpdig (ntpsec 1.2.2) cannot use another port than 123 (its ``-p`` is the sample count), so
    ``port`` must be 123; to query a daemon under test, start it on port 123 inside a
    :class:`NetNamespace` and pass that namespace here.  Raises RefDaemonError on no reply.
    """
    _check_loopback(host)
    if port != 123:
        raise ValueError(
            "ntpdig only queries UDP port 123: run the server on port 123 in a NetNamespace"
        )
    ntpdig = find_ntpdig()
    if ntpdig is None:
        raise RefDaemonError("ntpdig not found; " + INSTALL_HINT)
    argv = [ntpdig, "-j", "-t", str(max(1, round(timeout))), host]
    run_timeout = timeout + 10.0  # Python start-up of ntpdig included
    if netns is not None:
        r = netns.run(argv, timeout=run_timeout)
    else:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=run_timeout, check=False)
    if r.returncode != 0 or not r.stdout.strip():
        raise RefDaemonError(f"ntpdig {host} failed ({r.returncode}): {r.stderr.strip()}")
    try:
        data = json.loads(r.stdout.strip().splitlines()[-1])
    except json.JSONDecodeError as e:
        raise RefDaemonError(f"ntpdig printed no JSON: {r.stdout!r}") from e
    return NtpdigResult(
        host=str(data.get("host", "")),
        ip=str(data.get("ip", "")),
        stratum=int(data["stratum"]),
        offset=float(data["offset"]),
        precision=float(data.get("precision", 0.0)),
        leap=str(data.get("leap", "")),
        time=str(data.get("time", "")),
        raw=data,
    )


def ntpq(
    *commands: str,
    host: str = "127.0.0.1",
    netns: NetNamespace | None = None,
    timeout: float = 10.0,
) -> str:
    """Run ntpsec's ntpq ``-n -c CMD ...`` against ``host`` (always UDP port 123); stdout."""
    _check_loopback(host)
    path = find_ntpq()
    if path is None:
        raise RefDaemonError("ntpq not found; " + INSTALL_HINT)
    argv = [path, "-n"]
    for c in commands:
        argv += ["-c", c]
    argv.append(host)
    if netns is not None:
        r = netns.run(argv, timeout=timeout)
    else:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if r.returncode != 0:
        raise RefDaemonError(f"ntpq {commands} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


def require(*tools: str) -> dict[str, str]:
    """Paths of the named tools (keys of TOOL_FINDERS, or "netns"); a missing one SKIPS the
    calling test, except under CI=true where it FAILS (CI must have run install-test-deps)."""
    import pytest

    found: dict[str, str] = {}
    missing: list[str] = []
    for tool in tools:
        if tool == "netns":
            if netns_available():
                found[tool] = "netns"
            else:
                missing.append("netns (needs root + unshare/nsenter)")
            continue
        path = find_tool(tool)
        if path is None:
            missing.append(tool)
        else:
            found[tool] = path
    if missing:
        msg = f"reference tool(s) missing: {', '.join(missing)}; {INSTALL_HINT}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + " (CI=true: interop tests are never skipped)", pytrace=False)
        pytest.skip(msg)
    return found


@contextlib.contextmanager
def running(proc: ManagedProcess) -> Iterator[ManagedProcess]:
    """``with running(ManagedProcess(...)) as p:`` — stops it on exit."""
    try:
        yield proc
    finally:
        proc.stop()
