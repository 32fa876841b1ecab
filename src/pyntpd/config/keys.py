"""ntpd's symmetric keys file: `keyid type key [# comment]`.

A key of up to 20 characters is taken as ASCII text, a longer one as hex (ntpd's rule, so
that ntp-keygen's 40-digit SHA1 keys keep working). Secrets never appear in repr or in
diagnostics: config dumps and logs end up in bug reports.
"""

from __future__ import annotations

import re
import string

from pyntpd.proto.auth import Algorithm, SymmetricKey

from . import files
from .diagnostics import Diagnostic, DiagnosticSink, Location

# ntpd 4.2.8 takes any OpenSSL digest name plus 'M' for MD5; ntpsec adds 'AES'. pyntpd
# implements the three algorithms that matter in practice (RFC 8573 recommends AES-CMAC).
KEY_TYPES: dict[str, Algorithm] = {
    "M": "MD5",
    "MD5": "MD5",
    "SHA1": "SHA1",
    "SHA-1": "SHA1",
    "AES128CMAC": "AES128CMAC",
    "AES-128-CMAC": "AES128CMAC",
    "AES": "AES128CMAC",
}
# Digests an ntpd keys file may name (OpenSSL's) that pyntpd does not implement: named back
# in the error, where any other text in that place could be a key.
OTHER_DIGESTS = frozenset({
    "MD2", "MD4", "MDC2", "RMD160", "RIPEMD160", "SHA", "SHA224", "SHA256", "SHA384", "SHA512",
    "SHA-224", "SHA-256", "SHA-384", "SHA-512", "SHA512-224", "SHA512-256", "SHA3-224",
    "SHA3-256", "SHA3-384", "SHA3-512", "SM3", "BLAKE2B512", "BLAKE2S256", "AES256CMAC",
})
MAX_ASCII_KEY = 20
MAX_KEY_BYTES = 64
MAX_KEY_ID = 65535
MAX_LINE_LENGTH = 4096

_ASCII_KEY_CHARS = frozenset(string.printable) - frozenset(string.whitespace) - {"#"}
_HEX = re.compile(r"[0-9A-Fa-f]+")
_TOKEN = re.compile(r"[^ \t\r\v\f]+")
_DIGITS = re.compile(r"[0-9]{1,10}")
_ID_SHOWN = re.compile(r"[0-9]{1,5}")


def mode_diagnostic(mode: int | None, filename: str) -> Diagnostic | None:
    """A warning when the keys file is accessible to group or others (e.g. mode 0644)."""
    if mode is None or not mode & 0o077:
        return None
    return Diagnostic(
        "warning",
        filename,
        0,
        0,
        f"keys file is accessible to group/others (mode {mode & 0o777:04o}); "
        "anyone who can read it can forge authenticated NTP packets",
        f"chmod 600 {filename}",
    )


def _has_control(text: str) -> int:
    for i, ch in enumerate(text):
        cp = ord(ch)
        if (cp < 0x20 and ch != "\t") or cp == 0x7F or 0x80 <= cp <= 0x9F:
            return i
    return -1


def _parse_secret(
    text: str, algorithm: Algorithm, loc: Location, sink: DiagnosticSink
) -> bytes | None:
    if len(text) <= MAX_ASCII_KEY:
        bad = [c for c in text if c not in _ASCII_KEY_CHARS]
        if bad:
            sink.error(loc, "ASCII key contains a non-printable or non-ASCII character")
            return None
        secret = text.encode("ascii")
    else:
        if not _HEX.fullmatch(text):
            sink.error(
                loc,
                f"key longer than {MAX_ASCII_KEY} characters must be hexadecimal",
                "use at most 20 printable characters, or an even number of hex digits",
            )
            return None
        if len(text) % 2:
            sink.error(loc, f"hex key has an odd number of digits ({len(text)})")
            return None
        secret = bytes.fromhex(text)
        if len(secret) > MAX_KEY_BYTES:
            sink.error(
                loc,
                f"key is {len(secret)} bytes long; the limit is {MAX_KEY_BYTES}",
                "over-long keys overflowed ntpd's buffers (CVE-2015-7854 class)",
            )
            return None
    if algorithm == "AES128CMAC" and len(secret) != 16:
        sink.error(
            loc,
            f"AES128CMAC keys must be exactly 16 bytes (got {len(secret)})",
            "write 32 hex digits",
        )
        return None
    return secret


def parse_keys(
    text: str, filename: str, *, mode: int | None = None
) -> tuple[dict[int, SymmetricKey], list[Diagnostic]]:
    """Parse keys-file text. `mode` is the file's st_mode, for the permission check."""
    sink = DiagnosticSink()
    perm = mode_diagnostic(mode, filename)
    if perm is not None:
        sink.append(perm)
    keys: dict[int, SymmetricKey] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        raw = raw.removesuffix("\r")
        if len(raw) > MAX_LINE_LENGTH:
            sink.error(
                Location(filename, number, MAX_LINE_LENGTH + 1),
                f"line is longer than {MAX_LINE_LENGTH} characters; line ignored",
            )
            continue
        bad = _has_control(raw)
        if bad >= 0:
            what = "NUL byte" if raw[bad] == "\0" else f"control character U+{ord(raw[bad]):04X}"
            sink.error(Location(filename, number, bad + 1), f"{what}; line ignored")
            continue
        hash_at = raw.find("#")
        body = raw if hash_at < 0 else raw[:hash_at]
        tokens = [(m.group(), m.start() + 1) for m in _TOKEN.finditer(body)]
        if not tokens:
            continue

        def loc(col: int, number: int = number) -> Location:
            return Location(filename, number, col)

        id_text, id_col = tokens[0]
        if not _DIGITS.fullmatch(id_text) or not 1 <= int(id_text) <= MAX_KEY_ID:
            # Quoted only if it could be an id (a number of 5 digits at most): a line that is
            # a key alone must not be echoed.
            shown = f" '{id_text}'" if _ID_SHOWN.fullmatch(id_text) else ""
            sink.error(loc(id_col), f"key id{shown} is not a number in 1..{MAX_KEY_ID}")
            continue
        key_id = int(id_text)
        if len(tokens) < 2:
            sink.error(loc(id_col + len(id_text)), f"key {key_id}: missing key type")
            continue
        type_text, type_col = tokens[1]
        algorithm = KEY_TYPES.get(type_text.upper())
        if algorithm is None:
            hint = "supported types: MD5 (or M), SHA1, AES128CMAC"
            if type_text.upper() == "SHA":
                hint = "'SHA' is SHA-0 in OpenSSL, which ntpd used; use SHA1 with a new key"
            # Echoed only if it is a digest's name: a type glued to its key ('MD5"secret')
            # or a line without a type ('11 secret 192.0.2.1') must not put a key in a log.
            shown = f" '{type_text}'" if type_text.upper() in OTHER_DIGESTS else ""
            sink.error(loc(type_col), f"key {key_id}: unsupported key type{shown}", hint)
            continue
        if len(tokens) < 3:
            sink.error(
                loc(type_col + len(type_text)),
                f"key {key_id}: missing key",
                "'#' starts a comment and cannot begin a key" if hash_at >= 0 else None,
            )
            continue
        secret_text, secret_col = tokens[2]
        # '#' ends the key (ntpd stops there too), silently truncating a password.
        if hash_at == secret_col - 1 + len(secret_text):
            sink.error(
                loc(hash_at + 1),
                f"key {key_id}: '#' inside the key starts a comment and cuts the key short",
                "'#' cannot be used in ASCII keys; use a hex key",
            )
            continue
        secret = _parse_secret(secret_text, algorithm, loc(secret_col), sink)
        if secret is None:
            continue
        if len(tokens) > 3:
            sink.warning(
                loc(tokens[3][1]),
                f"key {key_id}: per-key address lists are not supported; ignored",
            )
        if key_id in keys:
            sink.warning(loc(id_col), f"key {key_id} is defined again; the later one is used")
        keys[key_id] = SymmetricKey(key_id, algorithm, secret)
    return keys, sink.items


def load_keys(
    path: str,
    *,
    read_file: files.ReadFile = files.read_file,
    file_mode: files.FileMode = files.file_mode,
) -> tuple[dict[int, SymmetricKey], list[Diagnostic]]:
    """Read and parse the keys file at `path`. Never raises on bad input or missing files."""
    sink = DiagnosticSink()
    try:
        data = read_file(path)
    except OSError as exc:
        sink.error(Location(path), f"cannot read keys file: {files.describe_os_error(exc)}")
        return {}, sink.items
    text = files.decode(data, path, sink)
    keys, diags = parse_keys(text, path, mode=file_mode(path))
    return keys, sink.items + diags
