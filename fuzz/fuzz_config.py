"""atheris harness: the ntp.conf and keys parsers never raise on arbitrary input.

    .venv/bin/python fuzz/fuzz_config.py fuzz/corpus/config -max_total_time=60
"""

import sys

import atheris

with atheris.instrument_imports():
    from pyntpd.config import parse_text
    from pyntpd.config.keys import parse_keys


def _no_resolve(host, family):
    return []


def _no_files(path):
    raise FileNotFoundError(path)


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    parse_text(text, "fuzz.conf", resolve=_no_resolve, read_file=_no_files)
    parse_keys(text, "fuzz.keys")


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
