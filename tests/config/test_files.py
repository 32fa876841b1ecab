from __future__ import annotations

import os

import pytest

from pyntpd.config import MAX_FILE_SIZE, parse_file, read_file

from .helpers import FakeFiles, FakeResolver, messages


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
    with pytest.raises(OSError):
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
