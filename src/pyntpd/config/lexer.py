"""ntp.conf lexer: lines of whitespace-separated tokens, `#` comments, quoted file names.

ntpd splits on ASCII blanks only, so a file pasted from a web page (non-breaking spaces
between the words) silently turns every line into one unknown token. We accept such
separators, because the administrator's intent is obvious, but say so once per file.
Characters that can hide what a line really says (NUL, other control characters, bidi
overrides) are errors, and the line is not used.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from .diagnostics import DiagnosticSink, Location

MAX_LINE_LENGTH = 4096

# Unicode spaces that editors and web pages put where a blank was meant.
UNICODE_SEPARATORS = frozenset(
    [0x00A0, 0x1680, 0x202F, 0x205F, 0x2028, 0x2029, 0x3000, 0xFEFF, *range(0x2000, 0x200C)]
)
# Blanks ntpd itself separates on, plus \v and \f which are harmless.
ASCII_SEPARATORS = frozenset(" \t\v\f")
# Invisible characters that reorder text on screen ("Trojan Source"): a reviewer would not
# see what the daemon reads.
BIDI_CONTROLS = frozenset([*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F])


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    loc: Location
    quoted: bool = False

    @property
    def line(self) -> int:
        return self.loc.line

    @property
    def col(self) -> int:
        return self.loc.col


@dataclass(frozen=True, slots=True)
class Line:
    number: int
    tokens: tuple[Token, ...]


def _is_control(cp: int) -> bool:
    return cp < 0x20 or cp == 0x7F or 0x80 <= cp <= 0x9F or cp in BIDI_CONTROLS


def _describe(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X} {name}".rstrip() if name else f"U+{ord(ch):04X}"


def lex(text: str, filename: str, sink: DiagnosticSink) -> list[Line]:
    """Split `text` into lines of tokens; blank and comment-only lines are omitted."""
    lines: list[Line] = []
    odd_space_lines: list[int] = []
    odd_space_first: Location | None = None
    odd_space_kinds: set[str] = set()

    for number, raw in enumerate(text.split("\n"), start=1):
        # CRLF files are common and unambiguous.
        raw = raw.removesuffix("\r")
        if len(raw) > MAX_LINE_LENGTH:
            sink.error(
                Location(filename, number, MAX_LINE_LENGTH + 1),
                f"line is {len(raw)} characters long (limit {MAX_LINE_LENGTH}); line ignored",
            )
            continue

        tokens: list[Token] = []
        bad = False
        odd_here = False
        i = 0
        n = len(raw)
        while i < n:
            ch = raw[i]
            cp = ord(ch)
            if ch == "#":
                # The rest is a comment, but control characters in it still hide text.
                for j in range(i + 1, n):
                    if _is_control(ord(raw[j])) and raw[j] != "\t":
                        sink.error(
                            Location(filename, number, j + 1),
                            f"control character {_describe(raw[j])} in comment",
                            "remove it; it can hide what the line says",
                        )
                        bad = True
                        break
                break
            if ch in ASCII_SEPARATORS:
                i += 1
                continue
            if cp in UNICODE_SEPARATORS:
                if not odd_here:
                    odd_space_lines.append(number)
                    odd_here = True
                if odd_space_first is None:
                    odd_space_first = Location(filename, number, i + 1)
                odd_space_kinds.add(f"U+{cp:04X}")
                i += 1
                continue
            if _is_control(cp):
                what = "NUL byte" if cp == 0 else f"control character {_describe(ch)}"
                sink.error(Location(filename, number, i + 1), f"{what}; line ignored")
                bad = True
                i += 1
                continue
            start = i
            if ch == '"':
                end = raw.find('"', i + 1)
                if end < 0:
                    sink.error(
                        Location(filename, number, start + 1),
                        "unterminated quoted string; line ignored",
                    )
                    bad = True
                    break
                body = raw[i + 1 : end]
                for k, c in enumerate(body):
                    if _is_control(ord(c)) and c != "\t":
                        sink.error(
                            Location(filename, number, i + 2 + k),
                            f"control character {_describe(c)} in quoted string; line ignored",
                        )
                        bad = True
                tokens.append(Token(body, Location(filename, number, start + 1), quoted=True))
                i = end + 1
                continue
            while i < n:
                c = raw[i]
                cpc = ord(c)
                if (
                    c in ASCII_SEPARATORS
                    or c == "#"
                    or cpc in UNICODE_SEPARATORS
                    or _is_control(cpc)
                ):
                    break
                i += 1
            tokens.append(Token(raw[start:i], Location(filename, number, start + 1)))
        if tokens and not bad:
            lines.append(Line(number, tuple(tokens)))

    if odd_space_first is not None:
        kinds = sorted(odd_space_kinds)
        what = (
            "non-breaking spaces"
            if kinds == ["U+00A0"]
            else "Unicode space characters (" + ", ".join(kinds) + ")"
        )
        numbers = ", ".join(str(n) for n in odd_space_lines)
        plural = "lines" if len(odd_space_lines) > 1 else "line"
        sink.warning(
            odd_space_first,
            f"{what} used as separators on {plural} {numbers} (copied from a web page?); "
            "treated as spaces",
            "replace them with ordinary spaces; ntpd rejects such lines",
        )
    return lines
