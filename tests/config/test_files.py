from __future__ import annotations

import os

import pytest

from pyntpd.config import MAX_FILE_SIZE, parse_file, read_file

from .helpers import FakeFiles, FakeResolver, messages, parse


def test_read_file_returns_the_bytes(tmp_path):
    path = tmp_path / "ntp.conf"
    path.write_bytes(b"server a\n")
    assert read_file(str(path)) == b"server a\n"


def test_read_file_refuses_a_fifo_without_blocking(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    with pytest.raises(OSError, match="not a regular file"):
        read_file(str(path))


def test_read_file_refuses_a_directory(tmp_path):
    with pytest.raises(OSError, match="is a directory"):
        read_file(str(tmp_path))


def test_read_file_refuses_an_oversized_file(tmp_path):
    path = tmp_path / "big"
    path.write_bytes(b"#" * (MAX_FILE_SIZE + 1))
    with pytest.raises(OSError, match="larger than"):
        read_file(str(path))


def test_parse_file_reads_a_real_file(tmp_path):
    path = tmp_path / "ntp.conf"
    path.write_text("server a.example iburst\n")
    result = parse_file(path)
    assert not result.diagnostics, messages(result)
    assert result.config.files == (str(path),)


def test_parse_file_of_a_missing_file_is_an_error(tmp_path):
    result = parse_file(tmp_path / "nope.conf")
    assert result.has_errors
    assert str(result.errors[0]).endswith("nope.conf: error: cannot read configuration: "
                                          "No such file or directory")


def test_invalid_utf8_is_an_error_with_position_and_replacement():
    fs = FakeFiles({"/c": b"server a\xe9b.example\n"})
    result = parse_file("/c", resolve=FakeResolver(), read_file=fs.read_file,
                        file_mode=fs.file_mode)
    assert messages(result)[0] == (
        "/c:1:9: error: invalid UTF-8 byte 0xE9; replaced with U+FFFD; save the file as UTF-8"
    )


def test_invalid_utf8_in_a_comment_is_only_a_warning():
    fs = FakeFiles({"/c": b"server a.example # caf\xe9\n"})
    result = parse_file("/c", resolve=FakeResolver(), read_file=fs.read_file,
                        file_mode=fs.file_mode)
    assert not result.has_errors
    assert "(in a comment)" in messages(result)[0]
    assert result.config.servers[0].address == "a.example"


# --- files a configuration needs: ParseResult.unreadable (the daemon refuses to start) ----


def test_a_configuration_that_cannot_be_read_is_recorded_as_unreadable(tmp_path):
    result = parse_file(tmp_path / "ntp.conf.typo")
    assert [str(d) for d in result.unreadable] == [
        f"{tmp_path}/ntp.conf.typo: error: cannot read configuration: No such file or directory"]


def test_a_directory_given_as_the_configuration_is_unreadable(tmp_path):
    (only,) = parse_file(tmp_path).unreadable
    assert only.message == "cannot read configuration: is a directory"


def test_an_include_file_that_exists_but_cannot_be_read_is_unreadable():
    result = parse("includefile /etc/ntp/x\n", files={"/etc/ntp/x": b"<EACCES>"})
    assert [d.message for d in result.unreadable] == [
        "cannot read include file '/etc/ntp/x': Permission denied"]


def test_a_missing_include_file_is_skipped_as_ntpd_does_not_unreadable():
    assert parse("includefile /etc/ntp/crypto/pw\n").unreadable == ()


def test_a_keys_file_whose_keys_are_used_is_unreadable_when_it_cannot_be_read():
    result = parse("keys /etc/ntp/keys\nserver a.example key 1\ntrustedkey 1\n",
                   files={"/etc/ntp/keys": b"<EACCES>"})
    (only,) = result.unreadable
    assert str(only) == ("ntp.conf:1:6: error: cannot read keys file '/etc/ntp/keys': "
                         "Permission denied; key 1 is needed by 'server' at ntp.conf:2:22")


def test_a_keys_file_no_key_is_used_from_is_not_needed():
    result = parse("keys /etc/ntp/keys\n", files={"/etc/ntp/keys": b"<EACCES>"})
    assert result.unreadable == () and not result.errors


def test_a_readable_configuration_has_nothing_unreadable(tmp_path):
    path = tmp_path / "ntp.conf"
    path.write_text("server a.example\n")
    assert parse_file(path).unreadable == ()
