"""Shared state and argument helpers for the directive handlers.

Handlers report problems through the Context. A line that is one setting (`server`,
`fudge`, `includefile`) is committed only when it produced no error (`ctx.line_ok`), so a
half-understood `server` line never becomes an association. A line that carries several
settings (`tos`, `tinker`, `discard`, `mru`, `enable`, `statistics`) keeps the ones that
were understood: only the bad word is dropped. A security setting pyntpd cannot honour
(`restrict`, `interface`) is never dropped quietly: `fail_closed` makes its errors fatal,
and the daemon refuses to start rather than run more open than the file says.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pyntpd.proto.access_types import RestrictFlag, RestrictRule

from . import files
from .diagnostics import Diagnostic, DiagnosticSink, Location, suggest
from .lexer import Token
from .model import (
    BroadcastConfig,
    FilegenConfig,
    InterfaceRule,
    LocalClock,
    RefclockConfig,
    ServerConfig,
)

_INT = re.compile(r"[+-]?[0-9]{1,12}")
_FLOAT = re.compile(r"[+-]?(?:[0-9]{1,15}(?:\.[0-9]{0,15})?|\.[0-9]{1,15})(?:[eE][+-]?[0-9]{1,3})?")


@dataclass(slots=True)
class Fudge:
    address: str
    token: Token
    stratum: int | None = None
    refid: str | None = None
    time1: float | None = None
    time2: float | None = None
    flags: dict[int, bool] = field(default_factory=dict)  # flag bit -> set
    ignored: list[str] = field(default_factory=list)


@dataclass(slots=True)
class KeyRef:
    key_id: int
    token: Token
    use: str  # "server", "trustedkey", "controlkey", "requestkey"


@dataclass(slots=True)
class CastBuilder:
    """`broadcast`, `broadcastclient`, `multicastclient`, `broadcastdelay`, `ttl` so far."""

    broadcasts: list[BroadcastConfig] = field(default_factory=list)
    client_token: Token | None = None  # the line that turned the broadcast client on
    groups: list[str] = field(default_factory=list)
    delay: float | None = None
    ttl_map: tuple[int, ...] | None = None


@dataclass(slots=True)
class Builder:
    """Mutable accumulation of a configuration while lines are read."""

    servers: list[ServerConfig] = field(default_factory=list)
    server_index: dict[tuple[str, int], ServerConfig] = field(default_factory=dict)
    local_clocks: list[LocalClock] = field(default_factory=list)
    refclocks: list[RefclockConfig] = field(default_factory=list)
    unsupported_refclocks: set[str] = field(default_factory=set)
    refclock_lines: dict[str, Token] = field(default_factory=dict)  # address -> its line
    unpeers: list[Token] = field(default_factory=list)  # `unpeer`/`unconfig` targets
    fudges: list[Fudge] = field(default_factory=list)
    restrictions: list[RestrictRule] = field(default_factory=list)
    # (network, mask, ntpport bit) -> index in `restrictions`; ntpd keeps one entry per key
    restrict_index: dict[tuple[object, int | None, int], int] = field(default_factory=dict)
    # `restrict NAME` whose name did not resolve: (name, -4/-6, flags), judged at the end
    unresolved_restricts: list[tuple[Token, int | None, RestrictFlag]] = field(
        default_factory=list)
    scalars: dict[str, Any] = field(default_factory=dict)
    keys_token: Token | None = None
    key_refs: list[KeyRef] = field(default_factory=list)
    trusted_keys: set[int] = field(default_factory=set)
    statistics: list[str] = field(default_factory=list)
    filegens: list[FilegenConfig] = field(default_factory=list)
    interfaces: list[InterfaceRule] = field(default_factory=list)
    tos: dict[str, Any] = field(default_factory=dict)
    tinker: dict[str, Any] = field(default_factory=dict)
    flags: dict[str, bool] = field(default_factory=dict)
    discard: dict[str, int] = field(default_factory=dict)
    mru: dict[str, int | None] = field(default_factory=dict)
    cast: CastBuilder = field(default_factory=CastBuilder)


class Context:
    def __init__(self, sink: DiagnosticSink, resolve: files.Resolver) -> None:
        self.sink = sink
        self.resolve = resolve
        self.b = Builder()
        self._line_errors = 0
        self._line_start = 0
        # `end` was read here: ntpd ignores the rest of the configuration
        self.stopped: Token | None = None

    # -- line bookkeeping ------------------------------------------------------------------

    def start_line(self) -> None:
        self._line_errors = self.sink.error_count
        self._line_start = len(self.sink.items)

    def fail_closed(self, what: str) -> None:
        """This line's errors stop the daemon from starting (and a reload keeps the running
        configuration, as for any error)."""
        self.sink.make_fatal(
            self._line_start,
            f"pyntpd refuses to start with a {what} line it cannot honour, rather than "
            "run more open than this file says",
        )

    @property
    def line_ok(self) -> bool:
        return self.sink.error_count == self._line_errors

    # -- reporting -------------------------------------------------------------------------

    @staticmethod
    def loc(at: Token | Location) -> Location:
        return at.loc if isinstance(at, Token) else at

    @staticmethod
    def after(tok: Token) -> Location:
        """The column just past a token: where a missing argument should have been."""
        width = len(tok.text) + (2 if tok.quoted else 0)
        return Location(tok.loc.file, tok.loc.line, tok.loc.col + width)

    def error(self, at: Token | Location, message: str, hint: str | None = None) -> None:
        self.sink.error(self.loc(at), message, hint)

    def fatal(self, at: Token | Location, message: str, hint: str | None = None) -> None:
        """An error that stops the daemon from starting (see `fail_closed`)."""
        loc = self.loc(at)
        self.sink.append(Diagnostic("error", loc.file, loc.line, loc.col, message, hint,
                                    fatal=True))

    def warning(self, at: Token | Location, message: str, hint: str | None = None) -> None:
        self.sink.warning(self.loc(at), message, hint)

    def unknown(
        self,
        tok: Token,
        what: str,
        candidates: Iterable[str],
        context: str | None = None,
    ) -> None:
        message = f"unknown {what} '{tok.text}'" + (f" {context}" if context else "")
        self.error(tok, message, suggest(tok.text, candidates))

    # -- arguments -------------------------------------------------------------------------

    def need(self, args: list[Token], i: int, owner: Token, what: str) -> Token | None:
        if i < len(args):
            return args[i]
        self.error(self.after(owner), f"missing {what} after '{owner.text}'")
        return None

    def no_more(self, args: list[Token], i: int, directive: str) -> None:
        if i < len(args):
            self.error(args[i], f"unexpected argument '{args[i].text}' for '{directive}'")

    def int_value(
        self, tok: Token, what: str, lo: int, hi: int, hint: str | None = None
    ) -> int | None:
        text = tok.text
        if not _INT.fullmatch(text):
            if _FLOAT.fullmatch(text):
                self.error(tok, f"{what} must be a whole number, not '{text}'")
            else:
                self.error(tok, f"{what} must be a number, not '{text}'")
            return None
        value = int(text)
        if not lo <= value <= hi:
            self.error(tok, f"{what} {value} is out of range {lo}..{hi}", hint)
            return None
        return value

    def float_value(
        self, tok: Token, what: str, lo: float, hi: float, hint: str | None = None
    ) -> float | None:
        text = tok.text
        if not _FLOAT.fullmatch(text):
            self.error(tok, f"{what} must be a number, not '{text}'")
            return None
        value = float(text)
        if not math.isfinite(value) or not lo <= value <= hi:
            self.error(tok, f"{what} {text} is out of range {lo:g}..{hi:g}", hint)
            return None
        return value

    def int_arg(
        self,
        args: list[Token],
        i: int,
        owner: Token,
        what: str,
        lo: int,
        hi: int,
        hint: str | None = None,
    ) -> int | None:
        tok = self.need(args, i, owner, what)
        return None if tok is None else self.int_value(tok, what, lo, hi, hint)

    def float_arg(
        self,
        args: list[Token],
        i: int,
        owner: Token,
        what: str,
        lo: float,
        hi: float,
        hint: str | None = None,
    ) -> float | None:
        tok = self.need(args, i, owner, what)
        return None if tok is None else self.float_value(tok, what, lo, hi, hint)

    def path_value(self, tok: Token, what: str) -> str | None:
        """A file name; relative ones are taken relative to the file that names them."""
        text = tok.text
        if not text:
            self.error(tok, f"empty {what}")
            return None
        if os.path.isabs(text):
            return text
        base = os.path.dirname(tok.loc.file)
        if not base:
            return text
        resolved = os.path.join(base, text)
        self.warning(
            tok,
            f"relative {what} '{text}' is taken as '{resolved}'",
            "ntpd used its working directory; write an absolute path",
        )
        return resolved
