"""ntp.conf parser: directive dispatch, `includefile`, keys loading, and the final model.

Entry points never raise on bad input. Every problem becomes a Diagnostic; a line with an
error is left out of the configuration (as ntpd drops it), while the rest still parses, so
`--check` can show every problem in one run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace

from . import assoc, broadcast, files, refused, system
from . import ntsconfig as nts
from . import restrict as access
from .context import Context
from .diagnostics import Diagnostic, DiagnosticSink, Location
from .keys import SymmetricKey, parse_keys
from .lexer import Token, lex
from .model import (
    NO_LOCATION,
    DiscardConfig,
    MruConfig,
    NtpConfig,
    ParseResult,
    SystemFlags,
    TinkerConfig,
    TosConfig,
)

# ntpd allows 5 levels; a little more room costs nothing and still stops runaway nesting.
MAX_INCLUDE_DEPTH = 8
# The configuration with all its include files: each file is bounded (files.MAX_FILE_SIZE),
# but the same file included 2,000 times is not, and kept `--check` busy for an hour. Real
# configurations are a few hundred lines; 50,000 take about 3 s to check.
MAX_TOTAL_LINES = 50_000
MAX_TOTAL_BYTES = 4 << 20

Handler = Callable[[Context, Token, list[Token]], None]


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n % (1 << 20) == 0 else f"{n >> 10} KiB"


HANDLERS: dict[str, Handler] = {
    "server": assoc.handle_association,
    "pool": assoc.handle_association,
    "peer": assoc.handle_association,
    "unpeer": assoc.handle_unpeer,
    "unconfig": assoc.handle_unpeer,
    "fudge": assoc.handle_fudge,
    "restrict": access.handle_restrict,
    "delrestrict": access.handle_delrestrict,
    "interface": access.handle_interface,
    "nic": access.handle_interface,
    "listen": access.handle_listen,
    "driftfile": system.handle_driftfile,
    "leapfile": system.handle_leapfile,
    "keys": system.handle_keys,
    "statsdir": system.handle_path,
    "logfile": system.handle_path,
    "pidfile": system.handle_path,
    "ntpsigndsocket": system.handle_path,
    "trustedkey": system.handle_trustedkey,
    "requestkey": system.handle_single_key,
    "controlkey": system.handle_single_key,
    "statistics": system.handle_statistics,
    "filegen": system.handle_filegen,
    "tos": system.handle_tos,
    "tinker": system.handle_tinker,
    "discard": system.handle_discard,
    "mru": system.handle_mru,
    "enable": system.handle_enable,
    "disable": system.handle_enable,
    "nts": nts.handle_nts,
    "broadcast": broadcast.handle_broadcast,
    "broadcastclient": broadcast.handle_broadcastclient,
    "multicastclient": broadcast.handle_multicastclient,
    "broadcastdelay": broadcast.handle_broadcastdelay,
    "ttl": broadcast.handle_ttl,
}
for _name in (*refused.AUTOKEY_DIRECTIVES, *refused.MANYCAST_DIRECTIVES):
    HANDLERS[_name] = refused.handle_refused
for _name in refused.IGNORED_DIRECTIVES:
    HANDLERS[_name] = refused.handle_ignored

DIRECTIVES = frozenset([*HANDLERS, "includefile", "end"])
_SERVER_USES = ("server", "pool", "peer", "broadcast")


class _Parser:
    def __init__(
        self,
        resolve: files.Resolver,
        read_file: files.ReadFile,
        file_mode: files.FileMode,
        keys_file: str | None,
    ) -> None:
        self.sink = DiagnosticSink()
        self.ctx = Context(self.sink, resolve)
        self.read_file = read_file
        self.file_mode = file_mode
        self.keys_override = keys_file
        self.stack: list[str] = []
        self.files: list[str] = []
        self.total_lines = 0
        self.total_bytes = 0
        self.over_limit: Token | None = None  # the first include refused for the totals
        self.over_limit_more = 0  # and how many more were
        self.unreadable: list[Diagnostic] = []

    # -- reading ---------------------------------------------------------------------------

    def run(self, text: str, filename: str) -> None:
        self.total_lines += text.count("\n") + 1
        self.total_bytes += len(text)
        self.stack.append(os.path.normpath(filename))
        self.files.append(filename)
        for line in lex(text, filename, self.sink):
            if self.ctx.stopped:
                self.ctx.warning(line.tokens[0], "not read: ntpd stops reading its "
                                 f"configuration at 'end' ({self.ctx.stopped.loc})")
                break
            head, args = line.tokens[0], list(line.tokens[1:])
            self.ctx.start_line()
            try:
                self._dispatch(head, args)
            except Exception as exc:  # the parser must never take the daemon down
                self.sink.error(
                    head.loc,
                    f"internal error while reading this line ({type(exc).__name__}: {exc})",
                    "please report this as a pyntpd bug",
                )
        self.stack.pop()

    def _dispatch(self, head: Token, args: list[Token]) -> None:
        if head.text == "includefile":
            self._include(head, args)
            return
        if head.text == "end":
            self._end(head, args)
            return
        handler = HANDLERS.get(head.text)
        if handler is None:
            self.ctx.unknown(head, "directive", DIRECTIVES)
            return
        handler(self.ctx, head, args)

    def _include(self, head: Token, args: list[Token]) -> None:
        ctx = self.ctx
        tok = ctx.need(args, 0, head, "file name")
        ctx.no_more(args, 1, "includefile")
        if tok is None or not ctx.line_ok:
            return
        path = ctx.path_value(tok, "include file")
        if path is None:
            return
        if len(self.stack) > MAX_INCLUDE_DEPTH:
            ctx.error(
                tok, f"includefile nested more than {MAX_INCLUDE_DEPTH} levels deep; not read"
            )
            return
        key = os.path.normpath(path)
        if key in self.stack:
            chain = " -> ".join([*self.stack[self.stack.index(key) :], key])
            ctx.error(tok, f"include loop ({chain}); not read")
            return
        try:
            data = self.read_file(path)
        except FileNotFoundError:
            ctx.warning(tok, f"include file '{path}' does not exist; skipped")
            return
        except OSError as exc:
            self._unreadable(tok, f"cannot read include file '{path}': "
                             f"{files.describe_os_error(exc)}")
            return
        lines = data.count(b"\n") + 1
        if (self.total_lines + lines > MAX_TOTAL_LINES
                or self.total_bytes + len(data) > MAX_TOTAL_BYTES):
            if self.over_limit is None:
                self.over_limit = tok
                ctx.error(tok, f"include file '{path}' not read: with it the configuration "
                          f"would exceed {MAX_TOTAL_LINES} lines or "
                          f"{_size(MAX_TOTAL_BYTES)} (it has {lines} lines, "
                          f"{self.total_lines} are read already)",
                          "include each file once, and keep lists that long out of "
                          "ntp.conf")
            else:
                self.over_limit_more += 1
            return
        self.run(files.decode(data, path, self.sink), path)

    def _end(self, head: Token, args: list[Token]) -> None:
        """ntpd stops reading its configuration at `end`, in every file it has open."""
        self.ctx.no_more(args, 0, "end")
        if self.ctx.line_ok:
            self.ctx.stopped = head

    # -- keys ------------------------------------------------------------------------------

    def _load_keys(self) -> tuple[str | None, tuple[SymmetricKey, ...]]:
        b = self.ctx.b
        path = self.keys_override
        where: Location | Token
        if path is not None:
            where = Location(path)
        else:
            scalar = b.scalars.get("keys_file")
            path = scalar if isinstance(scalar, str) else None
            where = b.keys_token if b.keys_token is not None else Location("<keys>")
        refs = b.key_refs
        if path is None:
            if refs:
                ref = refs[0]
                self.ctx.error(
                    ref.token,
                    f"key {ref.key_id} is used by '{ref.use}' but no keys file is configured",
                    "add 'keys /etc/ntp/keys' (or start with -k FILE)",
                )
            return None, ()
        try:
            data = self.read_file(path)
        except OSError as exc:
            why = files.describe_os_error(exc)
            if refs:
                ref = refs[0]
                self._unreadable(
                    where,
                    f"cannot read keys file '{path}': {why}",
                    f"key {ref.key_id} is needed by '{ref.use}' at {ref.token.loc}",
                )
            else:
                self.ctx.warning(
                    where,
                    f"cannot read keys file '{path}': {why}; no key is used, so none are loaded",
                )
            return path, ()
        self.files.append(path)
        text = files.decode(data, path, self.sink)
        keys, diags = parse_keys(text, path, mode=self.file_mode(path))
        self.sink.extend(diags)
        for ref in refs:
            if ref.use == "trustedkey range":
                continue
            if ref.key_id not in keys:
                message = f"key {ref.key_id} is not in the keys file '{path}'"
                if ref.use in _SERVER_USES:
                    self.ctx.error(ref.token, message)
                else:
                    self.ctx.warning(ref.token, message + f" ('{ref.use}')")
            elif ref.use in _SERVER_USES and ref.key_id not in b.trusted_keys:
                self.ctx.warning(
                    ref.token,
                    f"key {ref.key_id} is not listed in 'trustedkey'",
                    "ntpd does not authenticate with untrusted keys; add it to 'trustedkey'",
                )
        return path, tuple(keys[k] for k in sorted(keys))

    def _unreadable(self, at: Token | Location, message: str, hint: str | None = None) -> None:
        self.ctx.error(at, message, hint)
        self.unreadable.append(self.sink.items[-1])

    # -- result ----------------------------------------------------------------------------

    def finish(self) -> ParseResult:
        ctx = self.ctx
        if self.over_limit is not None and self.over_limit_more:
            # One error, not thousands: the rest are refused for the same reason.
            ctx.error(self.over_limit, f"{self.over_limit_more} more includefile line(s) "
                      "after this one not read either, for the same reason")
        b = ctx.b
        assoc.apply_unpeers(ctx)
        assoc.apply_fudges(ctx)
        access.check_unresolved(ctx)
        keys_file, keys = self._load_keys()
        s = b.scalars

        def text(name: str) -> str | None:
            value = s.get(name)
            return value if isinstance(value, str) else None

        def number(name: str) -> int | None:
            value = s.get(name)
            return value if isinstance(value, int) else None

        broadcasts, ttl_map, broadcast_client = broadcast.finish(ctx, keys, b.trusted_keys)
        tos = dict(b.tos)
        if "cohort" in tos:
            tos["cohort"] = bool(tos["cohort"])
        config = NtpConfig(
            servers=tuple(b.servers),
            local_clocks=tuple(b.local_clocks),
            refclocks=tuple(b.refclocks),
            restrictions=tuple(b.restrictions),
            driftfile=text("driftfile"),
            keys_file=keys_file,
            keys=keys,
            trusted_keys=frozenset(b.trusted_keys),
            request_key=number("request_key"),
            control_key=number("control_key"),
            statistics=tuple(b.statistics),
            statsdir=text("statsdir"),
            statsdir_location=s.get("statsdir_location", NO_LOCATION),
            filegens=tuple(b.filegens),
            logfile=text("logfile"),
            leapfile=text("leapfile"),
            leapfile_checkhash=s.get("leapfile_checkhash", True) is not False,
            pidfile=text("pidfile"),
            ntpsigndsocket=text("ntpsigndsocket"),
            tos=replace(TosConfig(), **tos),
            tinker=replace(TinkerConfig(), **b.tinker),
            flags=replace(SystemFlags(), **b.flags),
            discard=replace(DiscardConfig(), **b.discard),
            mru=replace(MruConfig(), **b.mru),
            interfaces=tuple(b.interfaces),
            nts=nts.check_nts(ctx, self.file_mode),
            broadcasts=broadcasts,
            broadcast_client=broadcast_client,
            **({} if ttl_map is None else {"ttl_map": ttl_map}),
            files=tuple(self.files),
        )
        return ParseResult(config, list(self.sink.items), tuple(self.unreadable))


def parse_text(
    text: str,
    filename: str = "<string>",
    *,
    resolve: files.Resolver = files.resolve,
    read_file: files.ReadFile = files.read_file,
    file_mode: files.FileMode = files.file_mode,
    keys_file: str | None = None,
) -> ParseResult:
    """Parse ntp.conf text. `filename` is used in diagnostics and as the base for relative
    include/keys paths. `keys_file` (the -k option) overrides the `keys` directive.
    `resolve` is only used for `restrict HOSTNAME`; `read_file`/`file_mode` serve
    `includefile` and the keys file."""
    parser = _Parser(resolve, read_file, file_mode, keys_file)
    parser.run(text, filename)
    return parser.finish()


def parse_file(
    path: str | os.PathLike[str],
    *,
    resolve: files.Resolver = files.resolve,
    read_file: files.ReadFile = files.read_file,
    file_mode: files.FileMode = files.file_mode,
    keys_file: str | None = None,
) -> ParseResult:
    """Read and parse an ntp.conf file; a missing or unreadable file is an error diagnostic."""
    name = os.fspath(path)
    sink = DiagnosticSink()
    try:
        data = read_file(name)
    except OSError as exc:
        sink.error(Location(name), f"cannot read configuration: {files.describe_os_error(exc)}")
        return ParseResult(NtpConfig(), sink.items, tuple(sink.items))
    text = files.decode(data, name, sink)
    result = parse_text(
        text,
        name,
        resolve=resolve,
        read_file=read_file,
        file_mode=file_mode,
        keys_file=keys_file,
    )
    return ParseResult(result.config, sink.items + result.diagnostics, result.unreadable)
