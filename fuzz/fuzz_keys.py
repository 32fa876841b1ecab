"""atheris harness: the keys file parser alone, on the bytes of a file.

    .venv/bin/python fuzz/fuzz_keys.py fuzz/corpus/keys -max_total_time=60

fuzz_config.py also hands its input to `parse_keys`, but as ntp.conf text from ntp.conf
seeds; this one starts from keys files and goes through `load_keys` (the byte decoding too).
Checked: it never raises; every key it returns is one ntpd would use (id 1..65535, a known
algorithm, 1..64 bytes, exactly 16 for AES-128-CMAC) and survives a write/read round trip;
no diagnostic quotes a secret (of 6 characters or more, and not a digest's name); a
group/other-readable mode always gets its warning. The first byte 0xff makes the file 0644.
"""

import re
import sys

import atheris

with atheris.instrument_imports():
    from pyntpd.config.keys import (
        KEY_TYPES,
        MAX_KEY_BYTES,
        MAX_KEY_ID,
        OTHER_DIGESTS,
        load_keys,
        parse_keys,
    )

MIN_QUOTED_SECRET = 6  # shorter secrets turn up in any text by chance
QUOTED = re.compile(r"'([^']*)'")
DIGEST_NAMES = {name.encode() for name in OTHER_DIGESTS}  # a key may be "SHA256", quoted


def test_one_input(data: bytes) -> None:
    mode = 0o644 if data[:1] == b"\xff" else 0o600
    keys, diagnostics = load_keys("fuzz.keys", read_file=lambda path: data,
                                  file_mode=lambda path: mode)
    if mode & 0o077:
        assert any("accessible to group/others" in d.message for d in diagnostics)
    # What a diagnostic quotes from the file (fixed text such as the list of types in a hint
    # may contain a short secret by chance).
    said = " ".join(q for d in diagnostics for q in QUOTED.findall(f"{d.message} {d.hint}"))
    for key_id, key in keys.items():
        assert key.key_id == key_id and 1 <= key_id <= MAX_KEY_ID
        assert key.algorithm in KEY_TYPES.values()
        assert 1 <= len(key.secret) <= MAX_KEY_BYTES
        assert key.algorithm != "AES128CMAC" or len(key.secret) == 16
        if len(key.secret) >= MIN_QUOTED_SECRET and key.secret.upper() not in DIGEST_NAMES:
            assert key.secret.hex() not in said
            assert key.secret.decode("latin-1") not in said, "a diagnostic quotes a secret"
            assert key.secret.hex() not in repr(key)
    text = "".join(f"{k.key_id} {k.algorithm} {_written(k.secret)}\n" for k in keys.values())
    again, problems = parse_keys(text, "again.keys")
    assert again == keys, f"round trip changed the keys: {problems}"


def _written(secret: bytes) -> str:
    """As a keys file holds it: hex from 11 bytes on (22 digits read as hex), else ASCII
    (which is all that a shorter key can have come from)."""
    return secret.hex() if len(secret) > 10 else secret.decode("ascii")


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
