"""Property tests: whatever the input, the parser answers with diagnostics, never raises."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyntpd.config import parse_file, parse_keys, parse_text
from pyntpd.config.parser import DIRECTIVES

from .helpers import FakeFiles, FakeResolver

WORDS = [
    *sorted(DIRECTIVES),
    "-4", "-6", "default", "source", "mask", "255.255.0.0", "255.0.255.0", "127.127.1.0",
    "127.127.28.1", "192.0.2.1", "::1", "10.0.0.0/8", "host.example", "key", "minpoll",
    "maxpoll", "version", "port", "prefer", "iburst", "stratum", "refid", "time1", "(", ")",
    "...", "(1", "5)", "0", "1", "17", "65535", "-1", "1e309", "nan", "0.5", '"', '"a b"',
    "#", "\u00a0", "\x00", "listen", "eth0", "all", "maxmem", "average", "allan", "panic",
    "loopstats", "file", "type", "day", "nomodify", "kod", "limited", "/etc/ntp/inc",
]
FILES = {
    "/etc/ntp/inc": "server 192.0.2.9\nincludefile /etc/ntp/inc\nkeys /etc/ntp/keys\n",
    "/etc/ntp/keys": "1 MD5 abc\n2 SHA1 zz\n",
}

lines = st.lists(
    st.one_of(st.sampled_from(WORDS), st.text(max_size=6)), max_size=8
).map(" ".join)
configs = st.lists(lines, max_size=12).map("\n".join)

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def _parse(text: str):
    fs = FakeFiles(FILES)
    return parse_text(text, "/etc/ntp.conf", resolve=FakeResolver({"host.example": ["192.0.2.7"]}),
                      read_file=fs.read_file, file_mode=fs.file_mode)


def _assert_sane(result) -> None:
    for d in result.diagnostics:
        assert "internal error" not in d.message, str(d)
        assert d.severity in ("error", "warning")
        str(d)
    hash(result.config)


@SETTINGS
@given(st.text(max_size=400))
def test_arbitrary_text_never_raises(text):
    _assert_sane(_parse(text))


@SETTINGS
@given(configs)
def test_keyword_soup_never_raises(text):
    _assert_sane(_parse(text))


@SETTINGS
@given(st.binary(max_size=400))
def test_arbitrary_bytes_through_parse_file_never_raise(data):
    fs = FakeFiles({"/c": data, **FILES})
    result = parse_file("/c", resolve=FakeResolver(), read_file=fs.read_file,
                        file_mode=fs.file_mode)
    _assert_sane(result)


@SETTINGS
@given(st.text(max_size=300))
def test_arbitrary_keys_text_never_raises(text):
    keys, diags = parse_keys(text, "keys")
    assert all(1 <= k <= 65535 for k in keys)
    for d in diags:
        str(d)
