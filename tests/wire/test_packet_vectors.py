"""The golden vectors in ``spec/vectors/subunit.json`` against our codec and python-subunit.

Each vector must decode to exactly its stated packets or errors with :class:`PacketDecoder`
(whole, byte by byte, split at every offset), canonical vectors must be exactly what our
encoder writes, and every valid vector must read the same with python-subunit's
``ByteStreamToStreamResult`` (which ignores the 2.1 parent id).
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
from typing import Any

import pytest
from decoder_harness import decode_every_way
from subunit_reader import read_with_subunit, subunit_view

from testserver.wire.errors import PacketError
from testserver.wire.events import Packet
from testserver.wire.packets import (
    PACKET_ERROR_CODES,
    PacketDecoder,
    encode_packet,
)
from testserver.wire.sentinels import END_OF_INPUT

VECTOR_DIR = pathlib.Path(__file__).resolve().parent.parent.parent / "spec" / "vectors"
VECTORS: list[dict] = json.loads((VECTOR_DIR / "subunit.json").read_text(encoding="utf-8"))
VALID = [v for v in VECTORS if "packets" in v]
MALFORMED = [v for v in VECTORS if "error" in v]
NEXT_PACKET_START = b"\xb3\x29\x01"
"""Trailing bytes for the harness: the start of another packet, which must not be read yet."""


def ids(vectors: list[dict]) -> list[str]:
    return [v["name"] for v in vectors]


def vector_bytes(vector: dict) -> bytes:
    return bytes.fromhex(vector["hex"])


def packet_from_json(obj: dict) -> Packet:
    fields = dict(obj)
    if "file_bytes_hex" in fields:
        fields["file_bytes"] = bytes.fromhex(fields.pop("file_bytes_hex"))
    if fields.get("tags") is not None:
        fields["tags"] = tuple(fields["tags"])
    return Packet(**fields)


def expected_events(vector: dict) -> list[dict]:
    return vector["events"] if "events" in vector else vector["packets"]


def expected_outcome(vector: dict) -> list[Any]:
    """The vector's events in the harness's terms: Packets and ("error", code) tuples."""
    return [
        ("error", event["error"]) if "error" in event else packet_from_json(event)
        for event in expected_events(vector)
    ]


def decode_with_details(data: bytes) -> list[Any]:
    """Decode whole, keeping each error's code, discarded bytes and recoverability."""
    decoder = PacketDecoder()
    decoder.receive_data(data)
    decoder.receive_data(b"")
    seen: list[Any] = []
    while True:
        try:
            event = decoder.next_event()
        except PacketError as error:
            seen.append((error.code, error.data, error.recoverable))
            continue
        if event is END_OF_INPUT:
            return seen
        seen.append(event)


# ----------------------------------------------------------------------------- the file


def test_file_is_what_the_generator_writes() -> None:
    spec = importlib.util.spec_from_file_location("gen", VECTOR_DIR / "make_subunit_vectors.py")
    assert spec and spec.loader
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    on_disk = (VECTOR_DIR / "subunit.json").read_text(encoding="utf-8")
    assert on_disk == generator.render(generator.build()), "run make_subunit_vectors.py"


@pytest.mark.parametrize("vector", VECTORS, ids=ids(VECTORS))
def test_fields_describe_the_hex(vector: dict) -> None:
    groups = vector["hex"].split()
    assert len(groups) == len(vector["fields"])
    for group, (name, shown, meaning) in zip(groups, vector["fields"], strict=True):
        assert name and meaning
        if shown.endswith("…"):
            assert len(group) > 2 * 48 and group.startswith(shown[:-1]), name
        else:
            assert group == shown, name


def test_every_error_code_has_a_vector() -> None:
    assert {v["error"] for v in MALFORMED} == set(PACKET_ERROR_CODES)


def test_the_boundary_vectors_are_where_the_length_grows() -> None:
    lengths = {v["name"]: len(vector_bytes(v)) for v in VECTORS if v["name"].startswith("length")}
    assert lengths == {
        "length-63": 63,
        "length-65": 65,
        "length-16383": 16383,
        "length-16385": 16385,
    }
    lengths_of_length = {
        name: len(next(f for f in v["fields"] if f[0] == "length")[1]) // 2
        for v in VECTORS
        if (name := v["name"]).startswith("length")
    }
    assert lengths_of_length == {
        "length-63": 1,
        "length-65": 2,
        "length-16383": 2,
        "length-16385": 3,
    }


# ----------------------------------------------------------------------------- our codec


@pytest.mark.parametrize("vector", VECTORS, ids=ids(VECTORS))
def test_vector_decodes_as_stated(vector: dict) -> None:
    trailing = NEXT_PACKET_START if "packets" in vector else None
    outcome = decode_every_way(PacketDecoder, vector_bytes(vector), trailing=trailing)
    assert outcome == expected_outcome(vector)


@pytest.mark.parametrize("vector", MALFORMED, ids=ids(MALFORMED))
def test_error_discards_the_stated_bytes(vector: dict) -> None:
    got = decode_with_details(vector_bytes(vector))
    want = [
        (e["error"], bytes.fromhex(e["data_hex"]), e.get("recoverable", True))
        if "error" in e
        else packet_from_json(e)
        for e in vector["events"]
    ]
    assert got == want
    assert vector["error"] == next(e["error"] for e in vector["events"] if "error" in e)


@pytest.mark.parametrize("vector", VALID, ids=ids(VALID))
def test_canonical_vector_is_what_the_encoder_writes(vector: dict) -> None:
    encoded = b"".join(encode_packet(packet_from_json(p)) for p in vector["packets"])
    if vector["canonical"]:
        assert encoded == vector_bytes(vector)
    else:
        assert encoded != vector_bytes(vector)  # a non-minimal form of the same packets


# ----------------------------------------------------------------------------- python-subunit


@pytest.mark.parametrize("vector", VALID, ids=ids(VALID))
def test_valid_vector_reads_the_same_with_python_subunit(vector: dict) -> None:
    expected = [subunit_view(packet_from_json(p)) for p in vector["packets"]]
    assert read_with_subunit(vector_bytes(vector)) == expected
