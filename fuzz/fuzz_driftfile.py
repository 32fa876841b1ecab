"""atheris harness: the drift file parser returns a frequency within +-500 PPM or raises
DriftFormatError, nothing else; what it accepts survives a write/read round trip.

    .venv/bin/python fuzz/fuzz_driftfile.py fuzz/corpus/driftfile -max_total_time=60
"""

import math
import sys

import atheris

with atheris.instrument_imports():
    from pyntpd.daemon.driftfile import DriftFormatError, format_drift, parse_drift


def test_one_input(data: bytes) -> None:
    try:
        ppm = parse_drift(data)
    except DriftFormatError:
        return
    assert math.isfinite(ppm) and abs(ppm) <= 500.0
    assert abs(parse_drift(format_drift(ppm)) - ppm) <= 0.0005 + 1e-9  # %.3f rounding


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
