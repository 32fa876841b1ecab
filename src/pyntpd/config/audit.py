"""The configuration audit: one engine behind `pyntpd --check` and `pyntpctl check [--audit]`.

A Finding says what is wrong, why it matters and how to fix it. Three sources feed it:

- the parser's diagnostics (issue 2), some of which are security findings in their own right
  (Autokey, mode 7, `tinker panic 0`, a readable keys file) or are named for what they are
  (a `peer` without a key, polled as a server);
- whole-configuration checks that `pyntpd --check` has always made (`basic`: names that do
  not resolve, too few sources, no `restrict default`);
- the security review proper, reported with `--audit` only: restrict defaults, who may query
  mode 6, unauthenticated servers when keys exist, the local clock driver, discipline knobs.

Nothing here touches the world except through the injected `resolve`, like the parser.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from pyntpd.proto.access_types import RestrictFlag, RestrictRule

from . import files
from .assoc import PEER_AS_SERVER
from .diagnostics import Diagnostic, Location
from .model import NtpConfig, ParseResult, ServerConfig
from .refused import AUTOKEY_WHY, MODE7_WHY

Severity = Literal["error", "security", "warning", "note"]
# Output order, most serious first.
SEVERITIES: tuple[Severity, ...] = ("error", "security", "warning", "note")

# RFC 8633 §3.2: with four sources one falseticker is outvoted even while another is down.
RECOMMENDED_SOURCES = 4
# Below this, a single wrong source cannot be outvoted at all.
MIN_SECURE_SOURCES = 3
RECOMMENDED_DEFAULT = "kod limited nomodify notrap nopeer noquery"
DEFAULT_PANIC = 1000.0
SLEW_RATE = 500e-6  # s/s: the kernel's maximum slew, as in ntpd

F = RestrictFlag


@dataclass(frozen=True, slots=True)
class Finding:
    code: str  # stable identifier, e.g. "restrict-default-limited"
    severity: Severity
    location: Location
    what: str
    why: str | None = None
    fix: str | None = None
    basic: bool = False  # also reported without --audit (and by `pyntpd --check`)

    @property
    def message(self) -> str:
        return f"{self.what}: {self.why}" if self.why else self.what

    def as_diagnostic(self) -> Diagnostic:
        """For `pyntpd --check`, whose diagnostics are errors or warnings."""
        loc = self.location
        severity = "error" if self.severity == "error" else "warning"
        return Diagnostic(severity, loc.file, loc.line, loc.col, self.message, self.fix)

    def lines(self) -> list[str]:
        """`FILE:LINE:COL: severity: what — fix: ...`, and the reason indented below."""
        head = f"{self.location}: {self.severity}: {self.what}"
        if self.fix:
            head += f" — fix: {self.fix}"
        return [head] + ([f"    why: {self.why}"] if self.why else [])

    def to_dict(self) -> dict[str, object]:
        loc = self.location
        return {"code": self.code, "severity": self.severity, "file": loc.file,
                "line": loc.line or None, "col": loc.col or None, "what": self.what,
                "why": self.why, "fix": self.fix}


# --- parser diagnostics -----------------------------------------------------------------

# Parser diagnostics with a finding of their own: (code, test on the message, severity when
# the diagnostic is a warning). The texts come from the parser's own constants where it has
# them, so a rewording cannot slip by.
_NAMED_DIAGNOSTICS: tuple[tuple[str, Callable[[str], bool], Severity], ...] = (
    ("autokey", lambda m: AUTOKEY_WHY in m, "security"),
    ("mode7", lambda m: MODE7_WHY in m, "security"),
    ("peer-as-server", lambda m: m == PEER_AS_SERVER, "warning"),
    ("tinker-panic-0", lambda m: m.startswith("'tinker panic 0'"), "security"),
    ("keys-file-mode", lambda m: m.startswith("keys file is accessible to group/others"),
     "security"),
)


def from_diagnostic(d: Diagnostic) -> Finding:
    for code, matches, severity in _NAMED_DIAGNOSTICS:
        if matches(d.message):
            return Finding(code, "error" if d.is_error else severity, d.location, d.message,
                           fix=d.hint, basic=True)
    return Finding("parse", d.severity, d.location, d.message, fix=d.hint, basic=True)


# --- whole-configuration checks ---------------------------------------------------------

def _is_literal(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


class _Review:
    def __init__(self, config: NtpConfig, resolve: files.Resolver, filename: str) -> None:
        self.config = config
        self.resolve = resolve
        # Names looked up with a deadline (config.check) know which got no answer in time.
        self.lookups = resolve if isinstance(resolve, files.Lookups) else None
        self.file = Location(filename)
        self._resolved: dict[tuple[str, int | None], int] = {}

    def addresses(self, server: ServerConfig) -> int:
        """How many addresses a name has now (resolved once per name and family)."""
        if _is_literal(server.address):
            return 1
        key = (server.address.lower(), server.family)
        if key not in self._resolved:
            self._resolved[key] = len(self.resolve(server.address, server.family))
        return self._resolved[key]

    def unresolved(self) -> Iterator[Finding]:
        lookups = self.lookups
        for server in self.config.servers:
            if not _is_literal(server.address) and self.addresses(server) == 0:
                if lookups is not None and lookups.is_pending(server.address, server.family):
                    yield Finding("unresolved", "warning", server.location,
                                  f"{server.kind} '{server.address}': the resolver did not "
                                  f"answer within {lookups.budget:g} s; pyntpd will retry",
                                  basic=True)
                else:
                    yield Finding("unresolved", "warning", server.location,
                                  f"{server.kind} '{server.address}' does not resolve now; "
                                  "pyntpd will retry", basic=True)
        if lookups is not None and lookups.pending:
            names = ", ".join(name for name, _ in lookups.pending)
            yield Finding(
                "resolver-pending", "warning", self.file,
                f"no answer from the resolver within {lookups.budget:g} s for "
                f"{len(lookups.pending)} name(s): {names}",
                "they are reported as not resolving; the check does not wait longer, so "
                "that it always finishes",
                "check the nameservers in /etc/resolv.conf, or write addresses", basic=True)

    def source_count(self) -> Iterator[Finding]:
        config = self.config
        usable = [s for s in config.servers if not s.noselect]
        where = config.servers[0].location if config.servers else self.file
        if not config.servers and not config.local_clocks and not config.refclocks:
            yield Finding("no-sources", "warning", where,
                          "no time sources are configured; this server will never synchronise",
                          basic=True)
            return
        if not usable:
            return
        pools = [s for s in usable if s.kind == "pool"]
        if not pools:
            n = len(usable)
            if n < RECOMMENDED_SOURCES:
                what = (f"only {n} network time source(s); RFC 8633 §3.2 recommends at least "
                        f"{RECOMMENDED_SOURCES}")
                fix = "add servers, or use 'pool'"
                if n < MIN_SECURE_SOURCES:
                    yield Finding("too-few-sources", "security", where, what,
                                  _liar_reason(n), fix, basic=True)
                else:
                    yield Finding("few-sources", "warning", where, what,
                                  "so that one bad source can be outvoted", fix, basic=True)
            return
        # A pool counts as the members it can bring now, up to `tos maxclock`; a pool name
        # that does not resolve now is not judged (it is reported as unresolved).
        maxclock = config.tos.maxclock
        total = len(usable) - len(pools)
        for pool in pools:
            members = self.addresses(pool)
            total += min(members, maxclock) if members else maxclock
        if total < MIN_SECURE_SOURCES:
            yield Finding("too-few-sources", "security", pools[0].location,
                          f"the sources add up to {total} server(s) now (each pool counted "
                          "as the addresses its name has)", _liar_reason(total),
                          "add servers or pools with more members")

    def restrict_default_missing(self) -> Iterator[Finding]:
        versions = {r.network.version for r in self.config.restrictions
                    if r.is_default and r.network is not None}
        for version in (4, 6):
            if version not in versions:
                flag = "" if version == 4 else "-6 "
                yield Finding(
                    f"restrict-default-ipv{version}", "security", self.file,
                    f"no 'restrict {flag}default' line",
                    f"every IPv{version} client may query this server's status (mode 6) and "
                    "rate limiting is off",
                    f"add 'restrict {flag}default {RECOMMENDED_DEFAULT}'", basic=True)

    # --- --audit only -------------------------------------------------------------------

    def restrict_default_flags(self) -> Iterator[Finding]:
        defaults = {r.network.version: r.flags for r in self.config.restrictions
                    if r.is_default and r.network is not None}
        if not defaults:
            return
        checks = (
            ("noquery", F.NOQUERY, "security",
             "anyone may read this server's status with ntpq (mode 6), including the MRU "
             "list of its clients' addresses; mode 6 replies are larger than the requests"),
            ("limited", F.LIMITED, "security",
             "no rate limit: a flood of requests (or spoofed ones aimed at a victim) is "
             "answered in full"),
            ("kod", F.KOD, "security",
             "clients that exceed the rate limit or are refused are never told to back off "
             "(no RATE/DENY/RSTR kiss-o'-death)"),
            ("nopeer", F.NOPEER, "note",
             "pyntpd never creates peer associations from packets, but ntpd reading this "
             "file would"),
            ("nomodify", F.NOMODIFY, "note",
             "pyntpd refuses mode 6 writes always, but ntpd reading this file would not"),
            ("notrap", F.NOTRAP, "note",
             "pyntpd has no trap service, but ntpd reading this file would"),
        )
        for name, flag, severity, why in checks:
            lacking = sorted(v for v, flags in defaults.items()
                             if not flags & (flag | F.IGNORE))
            if not lacking:
                continue
            line = ("restrict default" if lacking == [4, 6]
                    else f"restrict -{lacking[0]} default")
            yield Finding(f"restrict-default-{name}", severity, self.file,
                          f"'{line}' lacks '{name}'", why,
                          f"use '{line} {RECOMMENDED_DEFAULT}'")

    def query_open(self) -> Iterator[Finding]:
        """restrict lines that let a non-loopback network read mode 6."""
        seen: set[str] = set()
        for rule in self.config.restrictions:
            if rule.is_default or rule.flags & (F.NOQUERY | F.IGNORE):
                continue
            if rule.network is not None and rule.network.network_address.is_loopback:
                continue
            who = _rule_name(rule)
            if who in seen:
                continue
            seen.add(who)
            yield Finding(
                "restrict-query-open", "security", self.file,
                f"'restrict {who}' allows mode 6 queries",
                "those hosts can read this server's status and the MRU list of its clients' "
                "addresses (ntpq mrulist)",
                "add 'noquery' unless ntpq must reach this server from there")

    def authentication(self) -> Iterator[Finding]:
        """Unauthenticated servers although keys are trusted here. Only a server that could
        hold one of those keys is told to use it: public servers (the NTP pool, the big
        public services) share no key with anyone, so for them the way to authenticated time
        is NTS with servers that offer it."""
        config = self.config
        trusted = sorted(k.key_id for k in config.keys if k.key_id in config.trusted_keys)
        if not trusted:
            return
        public: list[ServerConfig] = []
        for server in config.servers:
            if server.key is not None or server.nts:
                continue
            if server.kind == "pool" or is_public_server(server.address):
                public.append(server)
                continue
            ids = ", ".join(str(k) for k in trusted[:5]) + (", ..." if len(trusted) > 5 else "")
            yield Finding(
                "server-without-key", "security", server.location,
                f"server '{server.address}' is not authenticated although trusted keys "
                "are configured",
                "anyone on the path can forge its replies and move this clock",
                f"add 'key N' with a key this server shares (trusted here: {ids}), or 'nts' "
                "if it offers NTS")
        if public:
            names = ", ".join(f"'{s.address}'" for s in public)
            yield Finding(
                "public-server-unauthenticated", "note", public[0].location,
                f"{names} {'is a public server' if len(public) == 1 else 'are public servers'}"
                ": keys cannot authenticate them",
                "public servers share no symmetric key with anyone, so this file's trusted "
                "keys cannot protect their replies",
                "if authenticated time matters, add servers that offer NTS "
                "('server HOST nts')")

    def shm_world_writable(self) -> Iterator[Finding]:
        """ntpd creates SHM units 2 and up world-writable (docs/security.md)."""
        for c in self.config.refclocks:
            if c.type == 28 and c.unit >= 2 and not c.mode & 1:
                yield Finding(
                    "shm-world-writable", "security", c.location,
                    f"{c.address}: the shared memory segment is created world-writable",
                    "any local user can write this server's time into it, and through it "
                    "every client's", "use unit 0 or 1 with a writer running as root (gpsd), "
                    "or add 'mode 1' to keep the segment owner-only", basic=True)

    def selection(self) -> Iterator[Finding]:
        config = self.config
        sources: list[tuple[bool, Location]] = [
            (s.noselect, s.location) for s in config.servers]
        sources += [(c.noselect, c.location) for c in config.local_clocks]
        sources += [(c.noselect, c.location) for c in config.refclocks]
        if sources and all(noselect for noselect, _ in sources):
            yield Finding("all-noselect", "security", sources[0][1],
                          "every source is 'noselect'",
                          "nothing is ever selected: this server never synchronises and "
                          "serves stratum 16", "remove 'noselect' from the sources to use",
                          basic=True)
        locals_ = [c for c in config.local_clocks if not c.noselect]
        if not locals_:
            return
        clock = min(locals_, key=lambda c: c.stratum)
        if not any(not s.noselect for s in (*config.servers, *config.refclocks)):
            yield Finding(
                "local-clock-only", "security", clock.location,
                f"the local clock driver {clock.address} is the only source",
                f"this server serves its own free-running clock at stratum {clock.stratum} "
                "as if it were synchronised; nothing ever checks it",
                "add network sources, or keep it only on an isolated network that must agree")
        else:
            yield Finding(
                "local-clock-fallback", "note", clock.location,
                f"the local clock driver {clock.address} (stratum {clock.stratum}) is a "
                "fallback",
                "when every network source fails, clients keep getting this host's "
                "free-running clock as synchronised time",
                "remove it unless the clients must agree with this host during an outage")

    def discipline(self) -> Iterator[Finding]:
        tinker = self.config.tinker
        if tinker.panic > DEFAULT_PANIC:
            yield Finding(
                "tinker-panic-raised", "security", self.file,
                f"'tinker panic {tinker.panic:g}' raises the sanity limit above "
                f"{DEFAULT_PANIC:g} s", "a bad source can move the clock further before "
                "pyntpd gives up", "remove it (the default is 1000 s)")
        if tinker.step == 0:
            yield Finding(
                "tinker-step-0", "note", self.file, "'tinker step 0' never steps the clock",
                "a large offset is slewed at most 500 ppm: one hour off takes 83 days",
                "remove it unless applications cannot tolerate a step")
        elif tinker.step > 1.0:
            days = tinker.step / SLEW_RATE / 86400
            yield Finding(
                "tinker-step-large", "note", self.file,
                f"'tinker step {tinker.step:g}' slews offsets up to {tinker.step:g} s",
                f"at 500 ppm that takes up to {days:.1f} days, with the clock wrong meanwhile",
                "remove it (the default is 0.128 s)")

    def monitoring(self) -> Iterator[Finding]:
        """In ntpd `disable monitor` stops the MRU list only while no `restrict` rule says
        `limited` (any such rule starts it again); pyntpd always keeps its bounded list."""
        if self.config.flags.monitor:
            return
        limited = any(r.flags & F.LIMITED for r in self.config.restrictions)
        if limited:
            why = ("ntpd keeps its MRU list on whenever a 'restrict' rule says 'limited', as "
                   "one here does, and pyntpd always keeps its (bounded) list")
        else:
            why = ("pyntpd always keeps its (bounded) MRU list, where ntpd without a "
                   "'limited' rule would stop it; hosts that may query this server (no "
                   "'noquery') can read it with 'ntpq mrulist'")
        yield Finding(
            "disable-monitor", "note", self.file, "'disable monitor' has no effect", why,
            "remove it; keep the client list private with 'noquery' or 'nomrulist'")

    def leap_seconds(self) -> Iterator[Finding]:
        if self.config.leapfile is None:
            yield Finding(
                "no-leapfile", "note", self.file, "no 'leapfile'",
                "leap seconds are then only learnt from the servers' leap indicators",
                "add 'leapfile /usr/share/zoneinfo/leap-seconds.list' (kept up to date)")

    def bursts(self) -> Iterator[Finding]:
        for server in self.config.servers:
            if server.burst:
                yield Finding(
                    "burst", "note", server.location, f"'burst' on {server.kind} "
                    f"'{server.address}'",
                    "it sends eight packets per poll; public servers may rate-limit or "
                    "kiss-o'-death this client", "use 'iburst', or 'burst' only with servers "
                    "you operate")


# Public NTP services: nobody shares a symmetric key with them. The pool's names all end in
# pool.ntp.org; the rest are the large operators' well-known names.
PUBLIC_SUFFIXES = ("pool.ntp.org",)
PUBLIC_NAMES = frozenset([
    "time.google.com", "time1.google.com", "time2.google.com", "time3.google.com",
    "time4.google.com", "time.cloudflare.com", "time.apple.com", "time.windows.com",
    "time.facebook.com", "ntp.ubuntu.com", "time.nist.gov", "time-a.nist.gov",
    "time-b.nist.gov", "time.euro.apple.com", "time.aws.com",
])


def is_public_server(address: str) -> bool:
    name = address.lower().removesuffix(".")
    return (name in PUBLIC_NAMES
            or any(name == s or name.endswith("." + s) for s in PUBLIC_SUFFIXES))


def _liar_reason(n: int) -> str:
    if n <= 1:
        return ("with one source nothing can detect a falseticker: whatever it says, "
                "this clock follows")
    return ("with two sources that disagree nobody can tell which one is wrong, so a "
            "single liar cannot be outvoted")


def _rule_name(rule: RestrictRule) -> str:
    return rule.describe()


def review(
    config: NtpConfig, *, resolve: files.Resolver = files.resolve,
    filename: str = "ntp.conf", full: bool = True,
) -> list[Finding]:
    """Whole-configuration findings; `full=False` gives only the basic ones."""
    r = _Review(config, resolve, filename)
    checks: list[Callable[[], Iterable[Finding]]] = [
        r.unresolved, r.source_count, r.restrict_default_missing, r.selection,
        r.shm_world_writable]
    if full:
        checks += [r.restrict_default_flags, r.query_open, r.authentication,
                   r.discipline, r.monitoring, r.leap_seconds, r.bursts]
    return [f for check in checks for f in check() if full or f.basic]


def audit(
    result: ParseResult, *, resolve: files.Resolver = files.resolve,
    filename: str = "ntp.conf", full: bool = True,
) -> list[Finding]:
    """Every finding for a parsed file: the parser's, then the whole-configuration ones
    (unless the file could not be read at all)."""
    findings = [from_diagnostic(d) for d in result.diagnostics]
    unreadable = any(d.file == filename and d.line == 0 and d.is_error
                     for d in result.diagnostics)
    if not unreadable:
        findings += review(result.config, resolve=resolve, filename=filename, full=full)
    return findings


def ordered(findings: Iterable[Finding]) -> list[Finding]:
    """Grouped by severity (errors first), in file order within a group."""
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(findings, key=lambda f: (rank[f.severity], f.location.file,
                                           f.location.line, f.location.col))


def counts(findings: Iterable[Finding]) -> dict[Severity, int]:
    totals: dict[Severity, int] = dict.fromkeys(SEVERITIES, 0)
    for f in findings:
        totals[f.severity] += 1
    return totals
