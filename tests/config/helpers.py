"""Helpers: an in-memory file system, a fake resolver, and a parse() wrapper using both."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pyntpd.config import ParseResult, parse_text

DATA = Path(__file__).resolve().parent / "data"
# The team's shared seed files, when present beside the repository; tests prefer the copies.
SHARED_SEED = Path(__file__).resolve().parents[2] / ".." / "shared" / "seed"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class FakeFiles:
    """An in-memory file system for read_file/file_mode."""

    def __init__(self, files: dict[str, bytes | str] | None = None, mode: int = 0o100600):
        self.files = {
            k: v.encode() if isinstance(v, str) else v for k, v in (files or {}).items()
        }
        self.mode = mode
        self.reads: list[str] = []

    def read_file(self, path: str) -> bytes:
        self.reads.append(path)
        if path not in self.files:
            raise FileNotFoundError(2, "No such file or directory", path)
        data = self.files[path]
        if data == b"<EACCES>":
            raise PermissionError(13, "Permission denied", path)
        return data

    def file_mode(self, path: str) -> int | None:
        return self.mode if path in self.files else None


class FakeResolver:
    def __init__(self, table: dict[str, list[str]] | None = None):
        self.table = table or {}
        self.calls: list[tuple[str, int | None]] = []

    def __call__(self, host: str, family: int | None) -> list[IPAddress]:
        self.calls.append((host, family))
        return [ipaddress.ip_address(a) for a in self.table.get(host, [])]


SEED_RESOLVER = FakeResolver(
    {
        "3.cn.pool.ntp.org": ["192.0.2.3"],
        "1.cn.pool.ntp.org": ["192.0.2.1", "2001:db8::1"],
        "0.asia.pool.ntp.org": ["198.51.100.7"],
    }
)


def parse(
    text: str,
    filename: str = "ntp.conf",
    *,
    files: dict[str, bytes | str] | None = None,
    hosts: dict[str, list[str]] | None = None,
    mode: int = 0o100600,
    keys_file: str | None = None,
) -> ParseResult:
    fs = FakeFiles(files, mode)
    return parse_text(
        text,
        filename,
        resolve=FakeResolver(hosts),
        read_file=fs.read_file,
        file_mode=fs.file_mode,
        keys_file=keys_file,
    )


def messages(result: ParseResult) -> list[str]:
    return [str(d) for d in result.diagnostics]


def only_error(result: ParseResult) -> str:
    errors = result.errors
    assert len(errors) == 1, messages(result)
    return str(errors[0])


def only_warning(result: ParseResult) -> str:
    assert not result.errors, messages(result)
    assert len(result.warnings) == 1, messages(result)
    return str(result.warnings[0])
