from __future__ import annotations

import pytest

from pyntpd.config import SymmetricKey, load_keys, parse_keys
from pyntpd.config.keys import mode_diagnostic

from .helpers import FakeFiles, messages, only_error, only_warning, parse

HEX40 = "0123456789abcdef0123456789abcdef01234567"
HEX32 = "00112233445566778899aabbccddeeff"


def _keys(text: str) -> dict[int, SymmetricKey]:
    keys, diags = parse_keys(text, "keys")
    assert not diags, [str(d) for d in diags]
    return keys


def _error(text: str) -> str:
    keys, diags = parse_keys(text, "keys")
    assert len(diags) == 1 and diags[0].is_error, [str(d) for d in diags]
    assert keys == {}
    return str(diags[0])


def test_short_key_is_ascii():
    assert _keys("1 MD5 secret")[1] == SymmetricKey(1, "MD5", b"secret")


def test_twenty_character_key_is_still_ascii():
    assert _keys("1 MD5 " + "a" * 20)[1].secret == b"a" * 20


def test_longer_key_is_hex():
    assert _keys(f"2 SHA1 {HEX40}")[2].secret == bytes.fromhex(HEX40)


def test_aes128cmac_hex_key_of_16_bytes():
    assert _keys(f"3 AES128CMAC {HEX32}")[3] == SymmetricKey(3, "AES128CMAC", bytes.fromhex(HEX32))


def test_aes128cmac_ascii_key_of_16_characters():
    assert _keys("3 AES128CMAC abcdefghijklmnop")[3].secret == b"abcdefghijklmnop"


@pytest.mark.parametrize(("name", "algorithm"), [("M", "MD5"), ("md5", "MD5"), ("sha1", "SHA1"),
                                                 ("SHA-1", "SHA1"), ("AES", "AES128CMAC"),
                                                 ("aes-128-cmac", "AES128CMAC")])
def test_type_aliases_are_case_insensitive(name, algorithm):
    assert _keys(f"1 {name} abcdefghijklmnop")[1].algorithm == algorithm


def test_comments_and_blank_lines_are_skipped():
    assert list(_keys("# keys\n\n1 MD5 abc # trailing comment\n   \n")) == [1]


def test_key_id_out_of_range_is_an_error():
    assert _error("65536 MD5 abc") == "keys:1:1: error: key id '65536' is not a number in 1..65535"


def test_key_id_zero_is_an_error():
    assert "key id '0'" in _error("0 MD5 abc")


def test_non_numeric_key_id_is_an_error():
    assert "key id is not a number" in _error("one MD5 abc")


def test_unsupported_type_is_an_error():
    assert _error("1 SHA256 abc") == (
        "keys:1:3: error: key 1: unsupported key type 'SHA256'; supported types: MD5 (or M), "
        "SHA1, AES128CMAC"
    )


def test_sha_type_is_an_error_explaining_it_is_sha0():
    assert "'SHA' is SHA-0" in _error("1 SHA abc")


def test_missing_type_is_an_error():
    assert _error("1") == "keys:1:2: error: key 1: missing key type"


def test_missing_key_is_an_error():
    assert _error("1 MD5") == "keys:1:6: error: key 1: missing key"


def test_ascii_key_with_non_ascii_character_is_an_error():
    assert "non-printable or non-ASCII" in _error("1 MD5 sécret")


def test_long_key_that_is_not_hex_is_an_error():
    assert "must be hexadecimal" in _error("1 MD5 " + "g" * 21)


def test_hex_key_with_odd_length_is_an_error():
    assert "odd number of digits (41)" in _error(f"1 SHA1 {HEX40}0")


def test_key_longer_than_64_bytes_is_an_error():
    assert "key is 65 bytes long; the limit is 64" in _error("1 SHA1 " + "ab" * 65)


def test_key_of_64_bytes_is_accepted():
    assert len(_keys("1 SHA1 " + "ab" * 64)[1].secret) == 64


def test_aes_key_of_wrong_length_is_an_error():
    assert "AES128CMAC keys must be exactly 16 bytes (got 20)" in _error(f"1 AES128CMAC {HEX40}")


def test_hash_inside_a_key_is_an_error():
    assert "'#' inside the key starts a comment" in _error("1 MD5 pass#word")


def test_nul_byte_is_an_error():
    assert _error("1 MD5 ab\x00c") == "keys:1:9: error: NUL byte; line ignored"


def test_duplicate_key_id_warns_and_the_later_wins():
    keys, diags = parse_keys("1 MD5 first\n1 MD5 second\n", "keys")
    assert keys[1].secret == b"second"
    assert [str(d) for d in diags] == [
        "keys:2:1: warning: key 1 is defined again; the later one is used"
    ]


def test_extra_fields_are_ignored_with_a_warning():
    keys, diags = parse_keys("1 MD5 abc 192.0.2.1\n", "keys")
    assert 1 in keys
    assert "per-key address lists are not supported" in str(diags[0])


def test_repr_never_shows_the_secret():
    key = SymmetricKey(7, "MD5", b"topsecret")
    assert "topsecret" not in repr(key) and "topsecret" not in str(key)
    assert repr(key) == "SymmetricKey(key_id=7, algorithm='MD5', secret=<9 bytes>)"


def test_group_readable_keys_file_is_a_warning():
    d = mode_diagnostic(0o100644, "/etc/ntp/keys")
    assert d is not None and str(d) == (
        "/etc/ntp/keys: warning: keys file is accessible to group/others (mode 0644); anyone "
        "who can read it can forge authenticated NTP packets; chmod 600 /etc/ntp/keys"
    )


def test_private_keys_file_has_no_warning():
    assert mode_diagnostic(0o100600, "/etc/ntp/keys") is None


def test_load_keys_reads_through_the_injected_reader():
    fs = FakeFiles({"/k": "1 MD5 abc\n"}, mode=0o100640)
    keys, diags = load_keys("/k", read_file=fs.read_file, file_mode=fs.file_mode)
    assert keys[1].secret == b"abc"
    assert [d.message.split(" (")[0] for d in diags] == ["keys file is accessible to group/others"]


def test_load_keys_of_a_missing_file_is_an_error_not_an_exception():
    fs = FakeFiles()
    keys, diags = load_keys("/nope", read_file=fs.read_file, file_mode=fs.file_mode)
    assert keys == {}
    assert str(diags[0]) == "/nope: error: cannot read keys file: No such file or directory"


def test_load_keys_from_a_real_file(tmp_path):
    path = tmp_path / "keys"
    path.write_text("5 SHA1 " + HEX40 + "\n")
    path.chmod(0o600)
    keys, diags = load_keys(str(path))
    assert keys[5].algorithm == "SHA1" and not diags


# -- the keys file from ntp.conf ----------------------------------------------------------


def test_keys_are_loaded_into_the_config():
    result = parse("keys /etc/ntp/keys\ntrustedkey 1\nserver a.example key 1\n",
                   files={"/etc/ntp/keys": "1 MD5 abc\n"})
    assert not result.diagnostics, messages(result)
    assert result.config.keys == (SymmetricKey(1, "MD5", b"abc"),)
    assert result.config.key(1) == SymmetricKey(1, "MD5", b"abc")
    assert result.config.keys_file == "/etc/ntp/keys"


def test_missing_keys_file_that_nothing_needs_is_a_warning():
    assert only_warning(parse("keys /etc/ntp/keys")) == (
        "ntp.conf:1:6: warning: cannot read keys file '/etc/ntp/keys': No such file or "
        "directory; no key is used, so none are loaded"
    )


def test_missing_keys_file_needed_by_a_server_is_an_error():
    msg = only_error(parse("keys /etc/ntp/keys\nserver a.example key 4\n"))
    assert msg.startswith("ntp.conf:1:6: error: cannot read keys file '/etc/ntp/keys'")
    assert "key 4 is needed by 'server' at ntp.conf:2:22" in msg


@pytest.mark.parametrize("line", ["trustedkey 4", "controlkey 4", "requestkey 4"])
def test_missing_keys_file_needed_by_a_key_directive_is_an_error(line):
    result = parse(f"keys /etc/ntp/keys\n{line}\n")
    assert "cannot read keys file" in str(result.errors[0])


def test_key_used_without_any_keys_directive_is_an_error():
    assert "key 4 is used by 'server' but no keys file is configured" in only_error(
        parse("server a.example key 4")
    )


def test_command_line_keys_file_overrides_the_directive():
    result = parse("keys /etc/ntp/keys\ntrustedkey 2\nserver a.example key 2",
                   files={"/other/keys": "2 MD5 abc"}, keys_file="/other/keys")
    assert not result.diagnostics, messages(result)
    assert result.config.keys_file == "/other/keys"


def test_server_key_missing_from_the_keys_file_is_an_error():
    result = parse("keys /k\ntrustedkey 9\nserver a.example key 9", files={"/k": "1 MD5 abc"})
    assert "key 9 is not in the keys file '/k'" in only_error(result)


def test_trustedkey_missing_from_the_keys_file_is_a_warning():
    result = parse("keys /k\ntrustedkey 9", files={"/k": "1 MD5 abc"})
    assert "key 9 is not in the keys file '/k' ('trustedkey')" in only_warning(result)


def test_server_key_not_trusted_is_a_warning():
    result = parse("keys /k\nserver a.example key 1", files={"/k": "1 MD5 abc"})
    assert "key 1 is not listed in 'trustedkey'" in only_warning(result)


def test_keys_file_errors_are_reported_against_the_keys_file():
    result = parse("keys /k", files={"/k": "1 MD5\n"})
    assert only_error(result) == "/k:1:6: error: key 1: missing key"


def test_world_readable_keys_file_is_reported_through_the_parser():
    result = parse("keys /k", files={"/k": "1 MD5 abc"}, mode=0o100644)
    assert "keys file is accessible to group/others (mode 0644)" in only_warning(result)
