"""A few seconds of fuzzing on every test run: the invariants of ``fuzz_invariants``.

The long run is ``bench/fuzz_decoders.py --seconds 60`` (atheris, or hypothesis where atheris
cannot be installed). Here hypothesis mutates the golden vectors of ``spec/vectors/`` and
tries random bytes, a bounded number of examples each.
"""

from __future__ import annotations

import pytest
from fuzz_invariants import CHECKS, crc_fixed, decode_packet_stream, mutated, seeds
from hypothesis import HealthCheck, given, settings

FRAME_SEEDS = seeds("frames")
PACKET_SEEDS = seeds("packets")
FIELD_SEEDS = seeds("fields")
FAST = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


@pytest.mark.parametrize("data", FRAME_SEEDS, ids=range(len(FRAME_SEEDS)))
def test_frame_vectors_keep_the_invariants(data: bytes) -> None:
    CHECKS["frames"](data)


@pytest.mark.parametrize("data", PACKET_SEEDS, ids=range(len(PACKET_SEEDS)))
def test_packet_vectors_keep_the_invariants(data: bytes) -> None:
    CHECKS["packets"](data)


@FAST
@given(mutated(FRAME_SEEDS))
def test_fuzzed_frames_keep_the_invariants(data: bytes) -> None:
    CHECKS["frames"](data)


@FAST
@given(mutated(PACKET_SEEDS))
def test_fuzzed_packets_keep_the_invariants(data: bytes) -> None:
    CHECKS["packets"](data)


@FAST
@given(mutated(FIELD_SEEDS))
def test_fuzzed_packet_fields_keep_the_invariants(data: bytes) -> None:
    """Packets with a correct CRC around mutated fields reach the field parser."""
    CHECKS["fields"](data)


def test_field_seeds_are_the_vectors_packets() -> None:
    """``crc_fixed`` of a field seed gives back the vector's packet, so seeds are valid."""
    packets = [data for data in PACKET_SEEDS if data[:1] == b"\xb3" and len(data) < 250]
    assert any(crc_fixed(seed) in packets for seed in FIELD_SEEDS)


def test_crc_fixed_packets_pass_the_crc_check() -> None:
    """The helper is what it claims: its packets fail later checks, never the CRC."""
    body = bytes([0x08, 3]) + b"foo"  # flags 0x?9?? aside, a test id field
    outcome = decode_packet_stream([crc_fixed(bytes([0x29, 0x01, len(body) - 2]) + body[2:])])
    assert outcome and outcome[0] != ("error", "bad-crc")
    assert ("error", "bad-crc") not in decode_packet_stream([crc_fixed(bytes(range(256)) * 3)])
