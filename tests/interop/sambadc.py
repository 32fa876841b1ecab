"""A throwaway Samba AD domain controller, for MS-SNTP against Samba's real ntp_signd.

`samba-tool domain provision` builds realm TEST.LAN in a temporary directory with its own
smb.conf (no DNS, every state, lock, pid and socket directory inside it); `samba` runs in
the foreground (-i), single process, with only its ntp_signd service, in a network
namespace of its own, so it binds nothing on the host. ntp_signd's socket is a path, and
paths are shared across network namespaces: pyntpd outside reaches it. Machine accounts
are made with samba-tool, and their NT hashes read back from the directory
(`samba-tool user getpassword --attributes=unicodePwd`), so a test can check a signature
independently of Samba. Nothing here touches the host's Samba configuration or its clock.

Needs root and Debian's samba, samba-ad-dc and samba-ad-provision (scripts/install-test-deps).
"""

from __future__ import annotations

import base64
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from refdaemons import ManagedProcess, NetNamespace, RefDaemonError, poll_until

REALM = "TEST.LAN"
DOMAIN = "TEST"
ADMIN_PASSWORD = "Adm1n-Pass!23"
PROVISION_TIMEOUT = 300.0  # ~12 s on a 2-core VM
TOOL_TIMEOUT = 60.0
START_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class MachineAccount:
    name: str  # sAMAccountName, "WIN1$"
    rid: int
    nt_hash: bytes  # the account's key for MS-SNTP, as the directory holds it

    @property
    def key_id(self) -> bytes:
        """The Authenticator's key identifier: the RID, little-endian ([MS-SNTP] 2.2.1)."""
        return self.rid.to_bytes(4, "little")


class SambaDC:
    def __init__(self, samba: str, samba_tool: str, ns: NetNamespace, root: Path) -> None:
        self.samba = samba
        self.samba_tool = samba_tool
        self.ns = ns
        self.root = root
        self.signd_dir = root / "ntp_signd"
        self.conf = root / "etc" / "smb.conf"
        self.sam = root / "private" / "sam.ldb"
        self.process: ManagedProcess | None = None

    @property
    def socket_path(self) -> Path:
        return self.signd_dir / "socket"

    def provision(self) -> None:
        options = {
            "ntp signd socket directory": self.signd_dir,
            "server services": "ntp_signd",
            "interfaces": "lo",
            "bind interfaces only": "yes",
            "pid directory": self.root / "run",
            "ncalrpc dir": self.root / "ncalrpc",
            "winbindd socket directory": self.root / "winbindd",
            "log file": self.root / "log.%m",
        }
        # An empty base, not the host's /etc/samba/smb.conf; provision writes etc/smb.conf.
        base = self.root / "base.conf"
        base.write_text("")
        self._tool(["domain", "provision", f"--realm={REALM}", f"--domain={DOMAIN}",
                    "--server-role=dc", "--dns-backend=NONE", f"--adminpass={ADMIN_PASSWORD}",
                    f"--targetdir={self.root}", "--host-name=dc1",
                    *(f"--option={k} = {v}" for k, v in options.items())],
                   PROVISION_TIMEOUT, conf=base)

    def add_computer(self, name: str, password: str, disabled: bool = False) -> MachineAccount:
        account = f"{name}$"
        self._tool(["computer", "create", name])
        self._tool(["user", "setpassword", account, f"--newpassword={password}"])
        if disabled:
            self._tool(["user", "disable", account])
        out = self._tool(["user", "getpassword", account,
                          "--attributes=objectSid,unicodePwd"])
        sid = re.search(r"^objectSid: S-[0-9-]+-(\d+)$", out, re.M)
        pwd = re.search(r"^unicodePwd:: (\S+)$", out, re.M)
        if sid is None or pwd is None:
            raise RefDaemonError(f"samba-tool user getpassword {account}: {out}")
        return MachineAccount(account, int(sid.group(1)), base64.b64decode(pwd.group(1)))

    def add_user(self, name: str, password: str) -> int:
        """A plain user (not a trust account); its RID."""
        self._tool(["user", "create", name, password])
        out = self._tool(["user", "getpassword", name, "--attributes=objectSid"])
        sid = re.search(r"^objectSid: S-[0-9-]+-(\d+)$", out, re.M)
        if sid is None:
            raise RefDaemonError(f"samba-tool user getpassword {name}: {out}")
        return int(sid.group(1))

    def _tool(self, args: list[str], timeout: float = TOOL_TIMEOUT,
              conf: Path | None = None) -> str:
        argv = [self.samba_tool, *args, "-s", str(conf or self.conf)]
        if conf is None:
            argv += ["-H", str(self.sam)]  # the directory itself, no server needed
        done = self.ns.run(argv, timeout=timeout)
        if done.returncode != 0:
            raise RefDaemonError(f"{' '.join(argv)} failed ({done.returncode}):\n"
                                 f"{done.stdout}{done.stderr}")
        return done.stdout + done.stderr

    def start(self) -> None:
        self.process = self.ns.popen(
            [self.samba, "-i", "-M", "single", "-s", str(self.conf)], self.root / "samba.out")
        poll_until(self._answers, START_TIMEOUT, "Samba's ntp_signd socket")

    def _answers(self) -> bool:
        if self.process is not None and not self.process.alive():
            raise RefDaemonError(f"samba exited:\n{self.process.log_text()}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(str(self.socket_path))
            except OSError:
                return False
        return True

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def log(self) -> str:
        return self.process.log_text() if self.process is not None else ""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
