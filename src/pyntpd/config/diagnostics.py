"""Diagnostics: what the parser says about a configuration, with file:line:col.

The parser never raises on bad input; everything it has to say ends up here, so that
`pyntpd --check` can print all problems at once and the daemon can refuse to start on errors.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Location:
    """Where something was written. `line` and `col` are 1-based; 0 means "the whole file"."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        if self.line <= 0:
            return self.file
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    severity: Severity
    file: str
    line: int
    col: int
    message: str
    hint: str | None = None
    # An error in a security setting pyntpd cannot honour (a `restrict` or `interface` line):
    # the daemon refuses to start rather than run more open than the file says.
    fatal: bool = False

    @property
    def location(self) -> Location:
        return Location(self.file, self.line, self.col)

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def __str__(self) -> str:
        text = f"{self.location}: {self.severity}: {self.message}"
        if self.hint:
            text += f"; {self.hint}"
        return text


def suggest(word: str, candidates: Iterable[str]) -> str | None:
    """A "did you mean" hint for a misspelt keyword, or None when nothing is close."""
    return _suggest(word, tuple(sorted(set(candidates))))


@functools.lru_cache(maxsize=1024)
def _suggest(word: str, pool: tuple[str, ...]) -> str | None:
    # Cached: a broken file tends to repeat the same typo on many lines.
    lowered = word.lower()
    # ntpd keywords are case-sensitive lowercase: 'Server' is a typo worth naming exactly.
    if lowered != word and lowered in pool:
        return f"did you mean '{lowered}'? (keywords are lower case)"
    matches = difflib.get_close_matches(lowered, pool, n=1, cutoff=0.6)
    if matches:
        return f"did you mean '{matches[0]}'?"
    return None


class DiagnosticSink:
    """Collects diagnostics in the order they are found."""

    __slots__ = ("_errors", "items")

    def __init__(self) -> None:
        self.items: list[Diagnostic] = []
        self._errors = 0  # kept incrementally: handlers ask after every line

    def append(self, diagnostic: Diagnostic) -> None:
        self.items.append(diagnostic)
        if diagnostic.is_error:
            self._errors += 1

    def extend(self, diagnostics: Iterable[Diagnostic]) -> None:
        for d in diagnostics:
            self.append(d)

    def add(
        self,
        severity: Severity,
        loc: Location,
        message: str,
        hint: str | None = None,
    ) -> None:
        self.append(Diagnostic(severity, loc.file, loc.line, loc.col, message, hint))

    def error(self, loc: Location, message: str, hint: str | None = None) -> None:
        self.add("error", loc, message, hint)

    def make_fatal(self, since: int, hint: str) -> None:
        """Mark the errors reported since item `since` as fatal, adding `hint`."""
        for i in range(since, len(self.items)):
            d = self.items[i]
            if d.is_error and not d.fatal:
                joined = f"{d.hint}; {hint}" if d.hint else hint
                self.items[i] = replace(d, hint=joined, fatal=True)

    def warning(self, loc: Location, message: str, hint: str | None = None) -> None:
        self.add("warning", loc, message, hint)

    @property
    def error_count(self) -> int:
        return self._errors
