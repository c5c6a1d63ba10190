"""The golden framing vectors in ``spec/vectors/frames.json`` against the codec.

Every vector must decode to exactly its ``events`` whether the bytes arrive whole, one byte
at a time, or split in two at any offset (``tests/decoder_harness.py``); canonical vectors
must be what the encoder writes.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import re

import pytest
from decoder_harness import decode_every_way

from testserver.wire.commands import COMMAND_TYPES, ID_PATTERN, Command, RunTests, Stdin
from testserver.wire.errors import FrameError
from testserver.wire.framing import (
    DEFAULT_MAX_PAYLOAD,
    ERROR_CODES,
    MAX_ERROR_DATA,
    FrameDecoder,
    encode_command,
)
from testserver.wire.sentinels import END_OF_INPUT, NEED_DATA

VECTORS_DIR = pathlib.Path(__file__).resolve().parent.parent.parent / "spec" / "vectors"
VECTORS = json.loads((VECTORS_DIR / "frames.json").read_text(encoding="utf-8"))
VECTOR_IDS = [vector["name"] for vector in VECTORS]


def vector_bytes(vector: dict) -> bytes:
    return bytes.fromhex(vector["hex"])


def command_from_json(event: dict) -> Command:
    """Build the command a vector's command object describes."""
    cls = COMMAND_TYPES[event["command"]]
    if cls is RunTests:
        return RunTests(event["id"], tuple(event["test_ids"]))
    if cls is Stdin:
        return Stdin(event["id"], bytes.fromhex(event["data_hex"]))
    return cls(event["id"])


def event_to_json(event: Command | FrameError) -> dict:
    """A decoder result in the vectors' event format."""
    if isinstance(event, FrameError):
        return {
            "error": event.code,
            "command_name": event.command_name,
            "command_id": event.command_id,
        }
    result: dict = {"command": event.name, "id": event.id}
    if isinstance(event, RunTests):
        result["test_ids"] = list(event.test_ids)
    elif isinstance(event, Stdin):
        result["data_hex"] = event.data.hex()
    return result


def check_error(error: FrameError) -> None:
    """Invariants every FrameError keeps, whatever the input."""
    assert error.code in ERROR_CODES
    assert error.recoverable == (error.code != "truncated")
    assert len(error.data) <= MAX_ERROR_DATA
    assert error.command_name is None or error.command_name in COMMAND_TYPES
    assert error.command_id is None or ID_PATTERN.match(error.command_id.encode())
    assert error.message


def decode_whole(data: bytes, max_payload: int) -> list:
    """Decode ``data`` then end of input in one piece, keeping each FrameError whole."""
    decoder = FrameDecoder(max_payload=max_payload)
    decoder.receive_data(data)
    decoder.receive_data(b"")
    events: list = []
    while len(events) <= len(data) + 2:
        try:
            event = decoder.next_event()
        except FrameError as error:
            check_error(error)
            events.append(error)
            continue
        if event is END_OF_INPUT:
            return events
        assert event is not NEED_DATA, "NEED_DATA after end of input"
        events.append(event)
    raise AssertionError("more events than bytes: the decoder is stuck")


def expected_outcome(vector: dict) -> list:
    """A vector's events in the decoder harness's outcome format."""
    return [
        ("error", event["error"]) if "error" in event else command_from_json(event)
        for event in vector["events"]
    ]


@pytest.mark.parametrize("vector", VECTORS, ids=VECTOR_IDS)
def test_vector_decodes_the_same_every_way(vector: dict) -> None:
    """Whole, byte at a time, split at every offset, and unaffected by a next frame's start."""
    max_payload = vector.get("max_payload", DEFAULT_MAX_PAYLOAD)
    truncated = any(event.get("error") == "truncated" for event in vector["events"])
    outcome = decode_every_way(
        lambda: FrameDecoder(max_payload=max_payload),
        vector_bytes(vector),
        trailing=None if truncated else b"list-tests",
    )
    assert outcome == expected_outcome(vector)


@pytest.mark.parametrize("vector", VECTORS, ids=VECTOR_IDS)
def test_vector_errors_carry_the_stated_name_and_id(vector: dict) -> None:
    max_payload = vector.get("max_payload", DEFAULT_MAX_PAYLOAD)
    events = decode_whole(vector_bytes(vector), max_payload)
    assert [event_to_json(event) for event in events] == vector["events"]


@pytest.mark.parametrize("vector", [v for v in VECTORS if v["canonical"]], ids=lambda v: v["name"])
def test_canonical_vector_is_what_the_encoder_writes(vector: dict) -> None:
    commands = [command_from_json(event) for event in vector["events"]]
    assert b"".join(encode_command(command) for command in commands) == vector_bytes(vector)


def unescape(text: str) -> bytes:
    """Invert the ``text`` rendering described in make_frame_vectors.py."""
    simple = {"n": b"\n", "r": b"\r", "t": b"\t", "\\": b"\\"}
    out = bytearray()
    for match in re.finditer(r"\\x([0-9a-f]{2})|\\(.)|(.)", text, re.DOTALL):
        hex_byte, escaped, char = match.groups()
        if hex_byte is not None:
            out.append(int(hex_byte, 16))
        elif escaped is not None:
            out += simple[escaped]
        else:
            out += char.encode("utf-8")
    return bytes(out)


@pytest.mark.parametrize("vector", VECTORS, ids=VECTOR_IDS)
def test_text_shows_the_same_bytes_as_hex(vector: dict) -> None:
    assert unescape(vector["text"]) == vector_bytes(vector)


def test_vectors_have_the_documented_shape() -> None:
    keys = {"name", "comment", "hex", "text", "canonical", "events"}
    for vector in VECTORS:
        assert keys <= set(vector) <= keys | {"max_payload"}, vector["name"]
        for event in vector["events"]:
            if "error" in event:
                assert set(event) == {"error", "command_name", "command_id"}
            else:
                assert event["command"] in COMMAND_TYPES
                extra = {"run-tests": {"test_ids"}, "stdin": {"data_hex"}}.get(event["command"])
                assert set(event) == {"command", "id"} | (extra or set())
        if vector["canonical"]:
            assert not any("error" in event for event in vector["events"])
    assert len(VECTOR_IDS) == len(set(VECTOR_IDS))


def test_vectors_cover_every_error_code_and_command() -> None:
    codes = {e["error"] for v in VECTORS for e in v["events"] if "error" in e}
    names = {e["command"] for v in VECTORS for e in v["events"] if "command" in e}
    assert codes == set(ERROR_CODES)
    assert names == set(COMMAND_TYPES)


def test_every_recoverable_error_has_a_recovery_vector() -> None:
    """For each recoverable code some vector decodes a good command after the error."""
    recovered = set()
    for vector in VECTORS:
        events = vector["events"]
        for index, event in enumerate(events):
            if "error" in event and any("command" in later for later in events[index + 1 :]):
                recovered.add(event["error"])
    assert recovered == set(ERROR_CODES) - {"truncated"}


def test_frames_json_is_what_the_generator_writes() -> None:
    spec = importlib.util.spec_from_file_location(
        "make_frame_vectors", VECTORS_DIR / "make_frame_vectors.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (VECTORS_DIR / "frames.json").read_text(encoding="utf-8") == module.render()
