"""ntp.conf and keys-file parsing into an immutable, typed configuration.

Nothing here raises on bad input: problems are returned as Diagnostics with file:line:col.
"""

from .check import check_config, check_file
from .defaults import DEFAULT_CONFIG_TEXT, load_default
from .diagnostics import Diagnostic, Location, Severity
from .files import MAX_FILE_SIZE, file_mode, read_file, resolve
from .keys import SymmetricKey, load_keys, parse_keys
from .model import (
    DiscardConfig,
    FilegenConfig,
    InterfaceRule,
    LocalClock,
    MruConfig,
    NtpConfig,
    ParseResult,
    ServerConfig,
    SystemFlags,
    TinkerConfig,
    TosConfig,
)
from .parser import MAX_INCLUDE_DEPTH, parse_file, parse_text

__all__ = [
    "DEFAULT_CONFIG_TEXT",
    "MAX_FILE_SIZE",
    "MAX_INCLUDE_DEPTH",
    "Diagnostic",
    "DiscardConfig",
    "FilegenConfig",
    "InterfaceRule",
    "LocalClock",
    "Location",
    "MruConfig",
    "NtpConfig",
    "ParseResult",
    "ServerConfig",
    "Severity",
    "SymmetricKey",
    "SystemFlags",
    "TinkerConfig",
    "TosConfig",
    "check_config",
    "check_file",
    "file_mode",
    "load_default",
    "load_keys",
    "parse_file",
    "parse_keys",
    "parse_text",
    "read_file",
    "resolve",
]
