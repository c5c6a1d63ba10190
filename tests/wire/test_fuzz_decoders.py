"""A few seconds of fuzzing on every test run: the invariants of ``fuzz_invariants``.

The long run is ``bench/fuzz_decoders.py --seconds 60`` (atheris, or hypothesis where atheris
cannot be installed). Here hypothesis mutates the golden vectors of ``spec/vectors/`` and
tries random bytes, a bounded number of examples each.
"""

from __future__ import annotations

import pytest
from fuzz_invariants import CHECKS, crc_fixed, decode_packet_stream, field_seed, mutated, seeds
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FAST = settings(
    max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


TARGETS = sorted(CHECKS)
SEEDS = [(target, data) for target in TARGETS for data in seeds(target)]


@pytest.mark.parametrize(("target", "data"), SEEDS, ids=[t for t, _ in SEEDS])
def test_seeds_keep_the_invariants(target: str, data: bytes) -> None:
    CHECKS[target](data)


@pytest.mark.parametrize("target", TARGETS)
@FAST
@given(data=st.data())
def test_fuzzed_inputs_keep_the_invariants(target: str, data: st.DataObject) -> None:
    """Mutated seeds; for ``fields``, packets with a correct CRC around mutated fields."""
    CHECKS[target](data.draw(mutated(seeds(target)), label="input"))


def test_crc_fixed_writes_correct_packets() -> None:
    """The ``fields`` helper is what it claims: flags, size and body give the whole packet."""
    readme_foo = bytes.fromhex("b3 2901 0c 03666f6f 08555f1b")
    assert crc_fixed(bytes([0x29, 0x01, 4]) + b"\x03foo") == readme_foo
    assert field_seed(readme_foo) == bytes([0x29, 0x01, 4]) + b"\x03foo"
    assert ("error", "bad-crc") not in decode_packet_stream([crc_fixed(bytes(range(256)) * 3)])
